"""Health checks of the registry: what they test (``checks``), how they run and what state
they keep (``monitor``), which ones the configuration asks for (``factory``), and the
endpoints and API gate that report them (``endpoints``)."""
