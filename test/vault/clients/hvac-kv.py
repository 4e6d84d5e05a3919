"""Keywarden's KV v2 through hvac, unchanged.

Run by test/vault/kv-clients.test.ts (and quoted in the README's "Coming from Vault"):
VAULT_ADDR points at a Keywarden broker, WRITER_TOKEN is a writer API key (kw_...),
ROLE_ID/SECRET_ID a client in group GROUP, PREFIX the KV folder this run uses.
Prints one JSON object with what each step returned or raised.
"""
import json
import os
import urllib.request

import hvac

result = {}
P = os.environ["PREFIX"]


def attempt(fn):
    try:
        return {"ok": fn()}
    except hvac.exceptions.VaultError as err:
        return {"error": {"name": type(err).__name__, "errors": getattr(err, "errors", None), "message": str(err)}}


def grant(name):
    """Granting is Keywarden's own step (native API or `keywarden` CLI), not part of Vault's KV API."""
    req = urllib.request.Request(
        "%s/v1/groups/%s/secrets" % (os.environ["VAULT_ADDR"], os.environ["GROUP"]),
        data=json.dumps({"add": [name]}).encode(),
        method="PUT",
        headers={"Authorization": "Bearer " + os.environ["WRITER_TOKEN"], "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as res:
        return res.status


# --- snippet: kv write ---
writer = hvac.Client(url=os.environ["VAULT_ADDR"], token=os.environ["WRITER_TOKEN"])
kv = writer.secrets.kv.v2
v1 = kv.create_or_update_secret(path=P + "/app/db", secret={"user": "svc", "password": "p1"}, cas=0)
v2 = kv.create_or_update_secret(path=P + "/app/db", secret={"user": "svc", "password": "p2"}, cas=1)
# --- end snippet ---
result["v1"] = v1["data"]
result["v2"] = v2["data"]
result["cas_mismatch"] = attempt(lambda: kv.create_or_update_secret(path=P + "/app/db", secret={"password": "lost"}, cas=1))
kv.create_or_update_secret(path=P + "/other", secret={"never": "granted"})

# --- snippet: kv read ---
client = hvac.Client(url=os.environ["VAULT_ADDR"])
client.auth.approle.login(role_id=os.environ["ROLE_ID"], secret_id=os.environ["SECRET_ID"])
result["before_grant"] = attempt(lambda: client.secrets.kv.v2.read_secret_version(path=P + "/app/db"))
result["grant"] = grant(P + ".app.db")  # the secret <P>/app/db is named <P>.app.db in Keywarden
latest = client.secrets.kv.v2.read_secret_version(path=P + "/app/db")
first = client.secrets.kv.v2.read_secret_version(path=P + "/app/db", version=1)
meta = client.secrets.kv.v2.read_secret_metadata(path=P + "/app/db")
# --- end snippet ---
result["latest"] = latest["data"]
result["first"] = first["data"]
result["metadata"] = meta["data"]
result["ungranted"] = attempt(lambda: client.secrets.kv.v2.read_secret_version(path=P + "/other"))
result["missing"] = attempt(lambda: client.secrets.kv.v2.read_secret_version(path=P + "/nothing"))

# --- snippet: kv delete ---
kv.delete_latest_version_of_secret(path=P + "/app/db")  # deletes the secret (all versions, grants revoked)
result["after_delete"] = attempt(lambda: client.secrets.kv.v2.read_secret_version(path=P + "/app/db"))
kv.undelete_secret_versions(path=P + "/app/db", versions=[2])  # restores it, without its grants
result["regrant"] = grant(P + ".app.db")
restored = client.secrets.kv.v2.read_secret_version(path=P + "/app/db")
# --- end snippet ---
result["restored"] = restored["data"]
result["destroy"] = attempt(lambda: kv.destroy_secret_versions(path=P + "/app/db", versions=[1]))

# --- snippet: kv list ---
listed = client.secrets.kv.v2.list_secrets(path=P + "/app")  # sends LIST
# --- end snippet ---
result["list"] = listed["data"]

print(json.dumps(result))
