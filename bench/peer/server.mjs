// The peer of bench/: node-oidc-provider with its token introspection endpoint (RFC 7662),
// models in PostgreSQL (adapter.mjs), one worker per CPU asked for in a node cluster.
//
// Environment: PEER_PORT, PEER_DATABASE_URL, PEER_WORKERS (default 2), PEER_POOL_SIZE
// (connections per worker, default 16: tokenstore's default), PEER_CLIENT_ID,
// PEER_CLIENT_SECRET. `node server.mjs --schema` creates the table and exits. The primary
// prints "READY" once every worker listens, and stops them on SIGTERM.
import cluster from 'node:cluster';
import { generateKeyPairSync } from 'node:crypto';
import process from 'node:process';

import Provider from 'oidc-provider';

import { SCHEMA, createAdapter, createPool } from './adapter.mjs';

const port = Number(process.env.PEER_PORT ?? 3000);
const databaseUrl = process.env.PEER_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/test';
const workers = Number(process.env.PEER_WORKERS ?? 2);
const poolSize = Number(process.env.PEER_POOL_SIZE ?? 16);
const clientId = process.env.PEER_CLIENT_ID ?? 'bench';
const clientSecret = process.env.PEER_CLIENT_SECRET ?? 'bench-secret-'.padEnd(48, 'x');

if (process.argv.includes('--schema')) {
  const pool = createPool(databaseUrl, 1);
  await pool.query(SCHEMA);
  await pool.end();
} else if (cluster.isPrimary) {
  // One signing key for every worker (introspection signs nothing, but the provider
  // wants a JWKS, and a generated development key logs a warning).
  const jwk = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  const env = { PEER_JWK: JSON.stringify({ ...jwk, kid: 'bench', alg: 'ES256', use: 'sig' }) };
  let listening = 0;
  cluster.on('listening', () => {
    listening += 1;
    if (listening === workers) console.log('READY');
  });
  let stopping = false;
  cluster.on('exit', (worker, code, signal) => {
    if (!stopping) {
      console.error(`worker ${worker.process.pid} died (${signal ?? code})`);
      process.exit(1);
    }
  });
  for (let i = 0; i < workers; i += 1) cluster.fork(env);
  const stop = () => {
    stopping = true;
    for (const worker of Object.values(cluster.workers)) worker.kill('SIGTERM');
    setTimeout(() => process.exit(0), 5000).unref();
    cluster.on('exit', () => {
      if (Object.keys(cluster.workers).length === 0) process.exit(0);
    });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  const pool = createPool(databaseUrl, poolSize);
  const provider = new Provider(`http://127.0.0.1:${port}`, {
    adapter: createAdapter(pool),
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      token_endpoint_auth_method: 'client_secret_basic',
      redirect_uris: ['https://rp.example/cb'],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      id_token_signed_response_alg: 'ES256',
    }],
    jwks: { keys: [JSON.parse(process.env.PEER_JWK)] },
    cookies: { keys: ['bench-cookie-key-'.padEnd(48, 'x')] },
    findAccount: async (ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    features: {
      devInteractions: { enabled: false },
      introspection: {
        enabled: true,
        // The default's rule, stated (the default logs that it should be changed): a
        // public client may introspect only its own tokens.
        allowedPolicy: async (ctx, client, token) => client.clientAuthMethod !== 'none'
          || token.clientId === client.clientId,
      },
    },
    scopes: ['openid', 'offline_access'],
  });
  const server = provider.listen(port);
  const stop = () => server.close(() => pool.end().then(() => process.exit(0)));
  process.on('SIGTERM', stop);
  process.on('disconnect', stop);
}
