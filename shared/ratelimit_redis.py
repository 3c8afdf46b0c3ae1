"""Login buckets in Redis, shared by every replica (and worker) that uses the same server.

One Lua script does a whole check or take over all of a login's buckets (account and
address) atomically on the server, with the server's clock (``TIME``), so concurrent
logins through any number of replicas get exactly the configured budget between them. A
bucket is a hash ``{t: tokens, at: ms}`` that expires once it would be full again, so Redis
holds only buckets that recently failed.

When Redis does not answer (down, timed out, refused), the login is counted in this
process's own buckets instead (:class:`shared.ratelimit.LocalBuckets`), never let through
uncounted: a warning says so once per outage, and an info line when Redis answers again.
While it is down the budget is per process, as without Redis.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.ratelimit import Buckets, LocalBuckets, Place, RateLimitConfig, Throttled

log = logging.getLogger(__name__)

KEY_PREFIX = "portside:ratelimit:"

# KEYS: the buckets. ARGV[1]: "check", "take" or "give"; then capacity and refill rate
# (tokens per millisecond) of each bucket. Returns the seconds to wait (0: done).
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op = ARGV[1]
local tokens, caps, rates = {}, {}, {}
local wait = 0
for i = 1, #KEYS do
  local cap, rate = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local stored = redis.call('HMGET', KEYS[i], 't', 'at')
  local level = cap
  if stored[1] then
    level = math.min(cap, tonumber(stored[1]) + math.max(0, now - tonumber(stored[2])) * rate)
  end
  tokens[i], caps[i], rates[i] = level, cap, rate
  if level < 1 then
    wait = math.max(wait, math.ceil((1 - level) / rate / 1000))
  end
end
if op == 'check' or (op == 'take' and wait > 0) then
  return wait
end
for i = 1, #KEYS do
  local level = tokens[i]
  if op == 'take' then level = level - 1 else level = math.min(caps[i], level + 1) end
  if level >= caps[i] then
    redis.call('DEL', KEYS[i])
  else
    redis.call('HSET', KEYS[i], 't', string.format('%.17g', level), 'at', now)
    redis.call('PEXPIRE', KEYS[i], math.ceil((caps[i] - level) / rates[i]) + 1000)
  end
end
return 0
"""


class RedisBuckets:
    """The buckets of :class:`shared.ratelimit.LoginLimits` in Redis, ``fallback`` (this
    process's) while Redis does not answer."""

    def __init__(
        self,
        client: Redis,
        config: RateLimitConfig,
        *,
        where: str = "",
        prefix: str = KEY_PREFIX,
    ) -> None:
        self.client, self.prefix = client, prefix
        self.where = where or "Redis"
        window_ms = config.window.total_seconds() * 1000
        self.shape = {
            "account": (config.accountfailures, config.accountfailures / window_ms),
            "address": (config.ipfailures, config.ipfailures / window_ms),
        }
        self.fallback = LocalBuckets(config)
        self.script = client.register_script(_SCRIPT)
        self.failing = False

    async def _run(self, op: str, places: Sequence[Place]) -> int | None:
        """The script's answer, or None when Redis did not answer."""
        keys = [self.prefix + key for _, key in places]
        args: list[str | float] = [op]
        for kind, _ in places:
            capacity, rate = self.shape[kind]
            args += [capacity, repr(rate)]
        try:
            answer = int(await self.script(keys=keys, args=args))
        except (RedisError, OSError) as error:
            if not self.failing:
                self.failing = True
                log.warning(
                    "ratelimit: %s does not answer (%s): counting failed logins in this "
                    "process only until it does",
                    self.where,
                    type(error).__name__,
                )
            return None
        if self.failing:
            self.failing = False
            log.info("ratelimit: %s answers again: failed logins are counted there", self.where)
        return answer

    async def check(self, places: Sequence[Place]) -> None:
        wait = await self._run("check", places)
        if wait is None:
            await self.fallback.check(places)
        elif wait:
            raise Throttled(wait)

    async def take(self, places: Sequence[Place]) -> Buckets:
        wait = await self._run("take", places)
        if wait is None:
            return await self.fallback.take(places)
        if wait:
            raise Throttled(wait)
        return self

    async def give_back(self, places: Sequence[Place]) -> None:
        # A place Redis holds and Redis cannot take back now: it refills with time.
        await self._run("give", places)

    async def close(self) -> None:
        await self.client.aclose()
