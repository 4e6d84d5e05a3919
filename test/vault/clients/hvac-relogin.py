"""hvac logs in again with the same client object after its token expired (issue 28).

Run by test/vault/vault-clients.test.ts: VAULT_ADDR, ROLE_ID and SECRET_ID as for hvac-auth.py.
Logs in, prints "logged-in" and waits for a line on stdin (the test moves the broker's clock past
the token's expiry meanwhile), then shows the token is refused and logs in again with the same
client, which still sends its expired token. Prints one JSON object on its last line.
"""
import json
import os
import sys

import hvac

result = {}
client = hvac.Client(url=os.environ["VAULT_ADDR"])
first = client.auth.approle.login(role_id=os.environ["ROLE_ID"], secret_id=os.environ["SECRET_ID"])
print("logged-in", flush=True)
sys.stdin.readline()

result["expired_is_authenticated"] = client.is_authenticated()
result["still_sends_expired_token"] = client.token == first["auth"]["client_token"]
try:
    again = client.auth.approle.login(role_id=os.environ["ROLE_ID"], secret_id=os.environ["SECRET_ID"])
    result["relogin"] = {"renewed_token": again["auth"]["client_token"] != first["auth"]["client_token"], "adopted": client.token == again["auth"]["client_token"]}
    result["lookup_after_relogin"] = client.lookup_token()["data"]["display_name"]
except hvac.exceptions.VaultError as err:
    result["relogin"] = {"exception": type(err).__name__, "errors": err.errors}
print(json.dumps(result))
