// Send one message through Logto's own HTTP Email / HTTP SMS connector package, the way
// Logto core does, and print the outcome as one line of JSON.
//
// Job (JSON, argv[2] or stdin):
//   {connector: "email"|"sms", endpoint, authorization?, to, type, payload, ip?, withBody?}
// Output: {"ok": true, "status": <HTTP status>} (plus "body": the response body, parsed when it
// is JSON, with withBody: true) or {"ok": false, "error": {code, message, data}}.
// Exits 0 whenever it could run the connector, so the caller asserts on the JSON; exits 2 on a
// bad job or a package that does not look like a Logto connector.
//
// Logto core loads a connector package's default export (a `createConnector` factory), builds
// it with `createConnector({ getConfig })`, where getConfig returns the JSON the admin saved,
// and sends with `sendMessage({ to, type, payload, ip })` (packages/core/src/libraries/passcode.ts).

import { readFileSync } from 'node:fs';

const packages = {
  email: { name: '@logto/connector-http-email', type: 'Email' },
  sms: { name: '@logto/connector-http-sms', type: 'Sms' },
};

const fail = (message) => {
  process.stderr.write(`send.mjs: ${message}\n`);
  process.exit(2);
};

const readJob = () => {
  const raw = process.argv[2] ?? readFileSync(0, 'utf8');
  try {
    return JSON.parse(raw);
  } catch (error) {
    return fail(`the job is not JSON: ${error.message}`);
  }
};

// ConnectorError.data is the raw response body wrapped as {message}, or for transport failures
// (email connector) the got error itself: keep what a test can assert on, JSON-safe.
const plain = (value) => {
  if (value instanceof Error) {
    return { name: value.name, code: value.code, message: value.message };
  }
  return value === undefined ? null : value;
};

const job = readJob();
const spec = packages[job.connector];
if (!spec) {
  fail(`connector must be "email" or "sms", not ${JSON.stringify(job.connector)}`);
}

const { default: createConnector } = await import(spec.name);
if (typeof createConnector !== 'function') {
  fail(`${spec.name} has no default-exported createConnector factory`);
}

const config = { endpoint: job.endpoint };
if (job.authorization !== undefined) {
  config.authorization = job.authorization;
}

const connector = await createConnector({ getConfig: async () => config });
if (connector.type !== spec.type || typeof connector.sendMessage !== 'function') {
  fail(`${spec.name} did not build a ${spec.type} connector with sendMessage`);
}

let result;
try {
  const response = await connector.sendMessage({
    to: job.to,
    type: job.type,
    payload: job.payload ?? {},
    ...(job.ip && { ip: job.ip }),
  });
  result = { ok: true, status: response?.statusCode ?? null };
  if (job.withBody) {
    // The connector returns got's response: its body is the raw text.
    const raw = response?.body ?? null;
    try {
      result.body = typeof raw === 'string' ? JSON.parse(raw) : raw;
    } catch {
      result.body = raw;
    }
  }
} catch (error) {
  result = {
    ok: false,
    error: {
      name: error?.name ?? null,
      code: error?.code ?? null,
      message: error?.message ?? String(error),
      data: plain(error?.data),
    },
  };
}

process.stdout.write(`${JSON.stringify(result)}\n`);
