// Keywarden through node-vault, unchanged: AppRole login, token lookup/renew/revoke, unwrap.
// Run by test/vault/vault-clients.test.ts (and quoted in the README's "Coming from Vault"):
// VAULT_ADDR points at a Keywarden broker; ROLE_ID/SECRET_ID are a Keywarden client's id and
// secret; WRAPPING_TOKEN is a bootstrap token. Prints one JSON object with what each step
// returned or threw.
import nodeVault from 'node-vault';

const result = {};
const failure = (err) => ({ name: err.constructor.name, message: err.message, statusCode: err.response?.statusCode, body: err.response?.body });

// --- snippet: login ---
const vault = nodeVault({ endpoint: process.env.VAULT_ADDR });
const login = await vault.approleLogin({ role_id: process.env.ROLE_ID, secret_id: process.env.SECRET_ID });
// node-vault keeps the token: vault.token === login.auth.client_token
const me = await vault.tokenLookupSelf();
// --- end snippet ---
result.login = login.auth;
result.tokenAdopted = vault.token === login.auth.client_token;
result.lookup = me.data;

// --- snippet: renew ---
const renewed = await vault.tokenRenewSelf({ increment: '30m' });
// Keywarden renews by issuing a new token; node-vault switches to renewed.auth.client_token itself
// --- end snippet ---
result.renew = { auth: renewed.auth, warnings: renewed.warnings };
result.renewAdopted = vault.token === renewed.auth.client_token;
result.renewedLookupTtl = (await vault.tokenLookupSelf()).data.ttl;

// --- snippet: unwrap ---
const bootstrap = nodeVault({ endpoint: process.env.VAULT_ADDR, token: process.env.WRAPPING_TOKEN });
const unwrapped = await bootstrap.unwrap();
bootstrap.token = unwrapped.auth.client_token;
// --- end snippet ---
result.unwrap = unwrapped.auth;
result.unwrappedLookup = (await bootstrap.tokenLookupSelf()).data.display_name;
try {
  await nodeVault({ endpoint: process.env.VAULT_ADDR, token: process.env.WRAPPING_TOKEN }).unwrap();
  result.secondUnwrap = 'no error';
} catch (err) {
  result.secondUnwrap = failure(err);
}
try {
  await bootstrap.tokenLookupSelf();
  result.unwrappedAfterReplay = 'no error';
} catch (err) {
  result.unwrappedAfterReplay = failure(err);
}

result.health = await vault.health();
result.mounts = (await vault.mounts()).data;
result.list = await vault.list('sys/mounts').then((r) => Object.keys(r.data));

// --- snippet: revoke ---
await vault.tokenRevokeSelf();
// --- end snippet ---
try {
  await vault.tokenLookupSelf();
  result.afterRevoke = 'no error';
} catch (err) {
  result.afterRevoke = failure(err);
}
try {
  await nodeVault({ endpoint: process.env.VAULT_ADDR }).approleLogin({ role_id: process.env.ROLE_ID, secret_id: 'wrong' });
  result.badLogin = 'no error';
} catch (err) {
  result.badLogin = failure(err);
}

console.log(JSON.stringify(result));
