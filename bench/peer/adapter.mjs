// A PostgreSQL adapter for oidc-provider over node-postgres: every model in one table,
// the shape of oidc-provider's adapter interface (see its lib/adapters/memory_adapter.js).
// Queries are named, so node-postgres prepares each once per connection.
import pg from 'pg';

export const TABLE = 'oidc_payloads';

export const SCHEMA = `
CREATE TABLE IF NOT EXISTS ${TABLE} (
  id text NOT NULL,
  type text NOT NULL,
  payload jsonb NOT NULL,
  grant_id text,
  user_code text,
  uid text,
  expires_at timestamptz,
  PRIMARY KEY (id, type)
);
CREATE INDEX IF NOT EXISTS ${TABLE}_grant_id ON ${TABLE} (grant_id) WHERE grant_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS ${TABLE}_user_code ON ${TABLE} (user_code) WHERE user_code IS NOT NULL;
CREATE INDEX IF NOT EXISTS ${TABLE}_uid ON ${TABLE} (uid) WHERE uid IS NOT NULL;
CREATE INDEX IF NOT EXISTS ${TABLE}_expires_at ON ${TABLE} (expires_at);
`;

const LIVE = '(expires_at IS NULL OR expires_at > now())';

export function createAdapter(pool) {
  return class PostgresAdapter {
    constructor(name) {
      this.name = name; // the model: AccessToken, Grant, Session, ...
    }

    async upsert(id, payload, expiresIn) {
      await pool.query({
        name: 'oidc-upsert',
        text: `INSERT INTO ${TABLE} (id, type, payload, grant_id, user_code, uid, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6,
                       CASE WHEN $7::int IS NULL THEN NULL
                            ELSE now() + make_interval(secs => $7::int) END)
               ON CONFLICT (id, type) DO UPDATE SET payload = EXCLUDED.payload,
                 grant_id = EXCLUDED.grant_id, user_code = EXCLUDED.user_code,
                 uid = EXCLUDED.uid, expires_at = EXCLUDED.expires_at`,
        values: [
          id, this.name, payload, payload.grantId ?? null, payload.userCode ?? null,
          payload.uid ?? null, typeof expiresIn === 'number' ? expiresIn : null,
        ],
      });
    }

    async #findBy(column, value) {
      const { rows } = await pool.query({
        name: `oidc-find-by-${column}`,
        text: `SELECT payload FROM ${TABLE} WHERE ${column} = $1 AND type = $2 AND ${LIVE}`,
        values: [value, this.name],
      });
      return rows[0]?.payload;
    }

    find(id) {
      return this.#findBy('id', id);
    }

    findByUid(uid) {
      return this.#findBy('uid', uid);
    }

    findByUserCode(userCode) {
      return this.#findBy('user_code', userCode);
    }

    async consume(id) {
      await pool.query({
        name: 'oidc-consume',
        text: `UPDATE ${TABLE}
               SET payload = payload || jsonb_build_object('consumed', floor(extract(epoch FROM now()))::int)
               WHERE id = $1 AND type = $2`,
        values: [id, this.name],
      });
    }

    async destroy(id) {
      await pool.query({
        name: 'oidc-destroy',
        text: `DELETE FROM ${TABLE} WHERE id = $1 AND type = $2`,
        values: [id, this.name],
      });
    }

    async revokeByGrantId(grantId) {
      await pool.query({
        name: 'oidc-revoke-by-grant-id',
        text: `DELETE FROM ${TABLE} WHERE grant_id = $1`,
        values: [grantId],
      });
    }
  };
}

export function createPool(connectionString, max) {
  const pool = new pg.Pool({ connectionString, max });
  // An idle connection the server closed (a restart, a terminated backend) is dropped by
  // the pool; without a listener its 'error' event would end the worker.
  pool.on('error', (error) => console.error(`idle connection lost: ${error.message}`));
  return pool;
}
