"""Keywarden through hvac, unchanged: AppRole login, token lookup/renew/revoke, unwrap.

Run by test/vault/vault-clients.test.ts (and quoted in the README's "Coming from Vault"):
VAULT_ADDR points at a Keywarden broker; ROLE_ID/SECRET_ID are a Keywarden client's id and
secret; WRAPPING_TOKEN is a bootstrap token (POST /v1/clients/{name}/bootstrap-tokens).
Prints one JSON object with what each step returned or raised.
"""
import json
import os

import hvac

result = {}

# --- snippet: login ---
client = hvac.Client(url=os.environ["VAULT_ADDR"])
login = client.auth.approle.login(role_id=os.environ["ROLE_ID"], secret_id=os.environ["SECRET_ID"])
# hvac keeps the token: client.token == login["auth"]["client_token"]
me = client.lookup_token()  # GET auth/token/lookup-self
# --- end snippet ---
result["login"] = login["auth"]
result["token_adopted"] = client.token == login["auth"]["client_token"]
result["is_authenticated"] = client.is_authenticated()
result["lookup"] = me["data"]

# --- snippet: renew ---
renewed = client.auth.token.renew_self(increment="30m")
# Keywarden renews by issuing a new token: switch to it
client.token = renewed["auth"]["client_token"]
# --- end snippet ---
result["renew"] = {"auth": renewed["auth"], "warnings": renewed.get("warnings")}
result["renewed_lookup_ttl"] = client.lookup_token()["data"]["ttl"]

# --- snippet: unwrap ---
bootstrap = hvac.Client(url=os.environ["VAULT_ADDR"])
unwrapped = bootstrap.sys.unwrap(token=os.environ["WRAPPING_TOKEN"])
bootstrap.token = unwrapped["auth"]["client_token"]
# --- end snippet ---
result["unwrap"] = unwrapped["auth"]
result["unwrapped_lookup"] = bootstrap.lookup_token()["data"]["display_name"]
try:
    hvac.Client(url=os.environ["VAULT_ADDR"]).sys.unwrap(token=os.environ["WRAPPING_TOKEN"])
    result["second_unwrap"] = "no exception"
except hvac.exceptions.VaultError as err:
    result["second_unwrap"] = {"exception": type(err).__name__, "errors": err.errors}
# the replay revoked what the first unwrap issued
result["unwrapped_after_replay"] = bootstrap.is_authenticated()

result["mounts"] = client.sys.list_mounted_secrets_engines()["data"]
result["health"] = client.sys.read_health_status(method="GET")
result["list"] = client.list("sys/mounts") is not None

# --- snippet: revoke ---
revoked = client.auth.token.revoke_self()
# --- end snippet ---
result["revoke_status"] = revoked.status_code
try:
    client.lookup_token()
    result["after_revoke"] = "no exception"
except hvac.exceptions.VaultError as err:
    result["after_revoke"] = {"exception": type(err).__name__, "errors": err.errors}
result["is_authenticated_after_revoke"] = client.is_authenticated()

try:
    hvac.Client(url=os.environ["VAULT_ADDR"]).auth.approle.login(role_id=os.environ["ROLE_ID"], secret_id="wrong")
    result["bad_login"] = "no exception"
except hvac.exceptions.VaultError as err:
    result["bad_login"] = {"exception": type(err).__name__, "errors": err.errors}

print(json.dumps(result))
