"""Event notifications as Distribution sends them: events built from requests
(``events``), queued and POSTed per endpoint in the background (``endpoint``), kept over a
clean restart (``spool``), fanned out by one ``Notifier`` per process (``notifier``)."""
