// node-vault logs in again with the same client object after its token expired (issue 28).
// Run by test/vault/vault-clients.test.ts: VAULT_ADDR, ROLE_ID and SECRET_ID as for
// node-vault-auth.mjs. Logs in, prints "logged-in" and waits for a line on stdin (the test moves
// the broker's clock past the token's expiry meanwhile), then shows the token is refused and logs
// in again with the same client, which still sends its expired token. Prints one JSON object on
// its last line.
import readline from 'node:readline';
import nodeVault from 'node-vault';

const result = {};
const failure = (err) => ({ name: err.constructor.name, message: err.message, statusCode: err.response?.statusCode });
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

const vault = nodeVault({ endpoint: process.env.VAULT_ADDR });
const first = await vault.approleLogin({ role_id: process.env.ROLE_ID, secret_id: process.env.SECRET_ID });
console.log('logged-in');
await lines.next();

try {
  await vault.tokenLookupSelf();
  result.expiredLookup = 'no error';
} catch (err) {
  result.expiredLookup = failure(err);
}
result.stillSendsExpiredToken = vault.token === first.auth.client_token;
try {
  const again = await vault.approleLogin({ role_id: process.env.ROLE_ID, secret_id: process.env.SECRET_ID });
  result.relogin = { newToken: again.auth.client_token !== first.auth.client_token, adopted: vault.token === again.auth.client_token };
  result.lookupAfterRelogin = (await vault.tokenLookupSelf()).data.display_name;
} catch (err) {
  result.relogin = failure(err);
}
console.log(JSON.stringify(result));
process.exit(0);
