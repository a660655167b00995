#!/usr/bin/env python3
"""Verify an offpeak lease token the way a model gateway should.

    pip install 'pyjwt[crypto]'
    OFFPEAK_URL=https://offpeak.example python3 verify_lease_token.py "$TOKEN"

Fetches $OFFPEAK_URL/.well-known/jwks.json, checks the token's EdDSA signature with the key
named by its `kid`, its audience (offpeak-gateway, or $OFFPEAK_AUDIENCE), its expiry and,
when $OFFPEAK_ISSUER is set, its issuer. Prints the claims and the rate to enforce.
Exits 1 when the token is refused.
"""

import json
import os
import sys

import jwt

AUDIENCE = os.environ.get("OFFPEAK_AUDIENCE", "offpeak-gateway")
ISSUER = os.environ.get("OFFPEAK_ISSUER")  # None: any issuer (set it in production)
LEEWAY_S = 60


def main() -> int:
    if len(sys.argv) != 2 or "OFFPEAK_URL" not in os.environ:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    token = sys.argv[1].strip()
    jwks_url = os.environ["OFFPEAK_URL"].rstrip("/") + "/.well-known/jwks.json"

    # Caches the JWKS; fetches it again when a token names a kid it does not know.
    jwks = jwt.PyJWKClient(jwks_url, cache_keys=True)
    try:
        signing_key = jwks.get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            signing_key.key,
            algorithms=["EdDSA"],  # never take the algorithm from the token
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=LEEWAY_S,
            options={"require": ["exp", "aud", "iss", "sub"]},
        )
    except (jwt.PyJWKClientError, jwt.InvalidTokenError) as error:
        print(f"refused: {type(error).__name__}: {error}", file=sys.stderr)
        return 1

    print(json.dumps(claims, indent=2, sort_keys=True))
    print(
        f"enforce: {claims['tokens_per_s']} tokens/s for lease {claims['lease']} "
        f"({claims['gpus']} GPUs in {claims['pool']}), account {claims['sub']}, "
        f"until {claims['exp']} (Unix seconds)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
