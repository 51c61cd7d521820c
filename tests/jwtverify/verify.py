#!/usr/bin/env python3
"""Independent JWT-SVID check with PyJWT (not the code under test).

verify <jwks_url> <alg>  — reads {"tokens": [...], "audiences": [[...], ...], "issuer": str|null}
  on stdin; fetches the JWKS from the OIDC endpoint, verifies every token (signature with the key
  named by its kid, exp/nbf/iat, aud, iss) and prints [{"header": ..., "claims": ...}, ...].
mint <alg> <kid> — reads {"key_pem": ..., "claims": {...}} on stdin and prints a signed token.
"""
import json
import sys

import jwt


def verify(url, alg):
    req = json.load(sys.stdin)
    client = jwt.PyJWKClient(url, cache_keys=False)
    out = []
    for token, aud in zip(req["tokens"], req["audiences"]):
        key = client.get_signing_key_from_jwt(token)
        options = {"require": ["exp", "iat", "nbf", "sub", "aud", "jti"]}
        kwargs = {}
        if req.get("issuer") is not None:
            kwargs["issuer"] = req["issuer"]
            options["require"].append("iss")
        claims = jwt.decode(token, key.key, algorithms=[alg], audience=aud[0],
                            options=options, leeway=0, **kwargs)
        out.append({"header": jwt.get_unverified_header(token), "claims": claims})
    json.dump(out, sys.stdout)


def mint(alg, kid):
    req = json.load(sys.stdin)
    sys.stdout.write(jwt.encode(req["claims"], req["key_pem"], algorithm=alg,
                                headers={"kid": kid}))


if __name__ == "__main__":
    if sys.argv[1] == "verify":
        verify(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "mint":
        mint(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: verify.py verify URL ALG | mint ALG KID")
