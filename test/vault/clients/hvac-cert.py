"""hvac's cert auth method against Keywarden's mTLS client identities (issue 28).

Run by test/vault/vault-cert-auth.test.ts: VAULT_ADDR is the broker's https:// address, CA_FILE
the CA of its server certificate, CERT_FILE/KEY_FILE a workload certificate mapped to a client.
The client starts with a stale token set (a login path ignores it), logs in with its
certificate, and reads a KV secret with the token it got. Prints one JSON object.
"""
import json
import os

import hvac

result = {}
client = hvac.Client(url=os.environ["VAULT_ADDR"], cert=(os.environ["CERT_FILE"], os.environ["KEY_FILE"]), verify=os.environ["CA_FILE"])
client.token = "stale-token-from-before"
login = client.auth.cert.login()
result["login"] = login["auth"]
result["token_adopted"] = client.token == login["auth"]["client_token"]
result["lookup"] = client.lookup_token()["data"]["display_name"]
result["kv"] = client.secrets.kv.v2.read_secret_version(path="db/password")["data"]["data"]
print(json.dumps(result))
