// Keywarden's KV v2 through node-vault, unchanged. Run by test/vault/kv-clients.test.ts (and
// quoted in the README's "Coming from Vault"): VAULT_ADDR points at a Keywarden broker,
// WRITER_TOKEN is a writer API key (kw_...), ROLE_ID/SECRET_ID a client in group GROUP,
// PREFIX the KV folder this run uses. Prints one JSON object with what each step returned or threw.
import nodeVault from 'node-vault';

const result = {};
const failure = (err) => ({ name: err.constructor.name, message: err.message, statusCode: err.response?.statusCode, body: err.response?.body });
const attempt = async (fn) => {
  try {
    return { ok: await fn() };
  } catch (err) {
    return { error: failure(err) };
  }
};
const P = process.env.PREFIX;
// Granting is Keywarden's own step (native API or `keywarden` CLI), not part of Vault's KV API.
const grant = (name) =>
  fetch(`${process.env.VAULT_ADDR}/v1/groups/${process.env.GROUP}/secrets`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${process.env.WRITER_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ add: [name] }),
  }).then((r) => r.status);

// --- snippet: kv write ---
const writer = nodeVault({ endpoint: process.env.VAULT_ADDR, token: process.env.WRITER_TOKEN });
// KV v2 through the generic calls: the body is { data, options }
const v1 = await writer.write(`secret/data/${P}/app/db`, { options: { cas: 0 }, data: { user: 'svc', password: 'p1' } });
const v2 = await writer.write(`secret/data/${P}/app/db`, { options: { cas: 1 }, data: { user: 'svc', password: 'p2' } });
// --- end snippet ---
result.v1 = v1.data;
result.v2 = v2.data;
result.casMismatch = await attempt(() => writer.write(`secret/data/${P}/app/db`, { options: { cas: 1 }, data: { password: 'lost' } }));
await writer.write(`secret/data/${P}/other`, { data: { never: 'granted' } });

// --- snippet: kv read ---
const vault = nodeVault({ endpoint: process.env.VAULT_ADDR });
await vault.approleLogin({ role_id: process.env.ROLE_ID, secret_id: process.env.SECRET_ID });
result.beforeGrant = await attempt(() => vault.read(`secret/data/${P}/app/db`));
result.grant = await grant(`${P}.app.db`); // the secret ${P}/app/db is named ${P}.app.db in Keywarden
const latest = await vault.read(`secret/data/${P}/app/db`);
const first = await vault.read(`secret/data/${P}/app/db?version=1`);
const meta = await vault.read(`secret/metadata/${P}/app/db`);
// --- end snippet ---
result.latest = latest.data;
result.first = first.data;
result.metadata = meta.data;
result.ungranted = await attempt(() => vault.read(`secret/data/${P}/other`));
result.missing = await attempt(() => vault.read(`secret/data/${P}/nothing`));

// --- snippet: kv delete ---
await writer.delete(`secret/data/${P}/app/db`); // deletes the secret (all versions, grants revoked)
result.afterDelete = await attempt(() => vault.read(`secret/data/${P}/app/db`));
await writer.write(`secret/undelete/${P}/app/db`, { versions: [2] }); // restores it, without its grants
result.regrant = await grant(`${P}.app.db`);
const restored = await vault.read(`secret/data/${P}/app/db`);
// --- end snippet ---
result.restored = restored.data;
result.destroy = await attempt(() => writer.write(`secret/destroy/${P}/app/db`, { versions: [1] }));

// --- snippet: kv list ---
const listed = await vault.list(`secret/metadata/${P}/app`); // sends LIST
// --- end snippet ---
result.list = listed.data;
result.listGetFallback = (await nodeVault({ endpoint: process.env.VAULT_ADDR, token: vault.token, noCustomHTTPVerbs: true }).list(`secret/metadata/${P}`)).data;

process.stdout.write(JSON.stringify(result));
