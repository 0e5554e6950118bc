"""API keys with scopes and rate limits for the HTTP services: key format and hashing
(:mod:`.keys`), the key store in Redis (:mod:`.store`), the check a request goes through
(:mod:`.authenticator`), the client's address behind proxies (:mod:`.addresses`) and the
shared rate limiter (:mod:`.ratelimit`). Nothing here knows HTTP frameworks."""
