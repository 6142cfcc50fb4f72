#!/usr/bin/env node
// A proxyless gRPC client of the mesh on Node's xDS client (@grpc/grpc-js-xds): it
// dials xds:///<host>:<port> with xDS mTLS credentials, calls the pods' UnaryCall and
// prints, as JSON, which version answered each call.
//
//   GRPC_XDS_BOOTSTRAP=bootstrap.json node client.js \
//     --target xds:///helloworld.sample.svc.cluster.local:5000 \
//     --sni outbound_.5000_._.helloworld.sample.svc.cluster.local --calls 10
//
// With --calls N it makes N calls, prints one JSON line for the batch and exits (0 when
// every call succeeded, 1 when one failed). With --stdin it keeps the channel and reads
// lines from standard input instead, each a number N of calls to make; it answers each
// line with one JSON line and exits at the end of its input. A batch line:
//
//   {"calls":N,"failed":F,"versions":{"v1":K,...},"results":[{"version":"v1","pod":"...","ms":1.2}|{"error":"..."},...]}
//
// Each call waits for a ready connection until its deadline (--timeout-ms, 5000), as
// grpc-go's WaitForReady; with --no-wait-for-ready a call fails at once while the
// channel has no ready connection, with the reason (a resolver error, say).
//
// --sni sets grpc.ssl_target_name_override: @grpc/grpc-js-xds ignores the cluster's
// UpstreamTlsContext.sni and sends the target's host as SNI, which a passthrough
// gateway cannot route. Usage errors exit 2.
'use strict';

const path = require('path');
const readline = require('readline');

// Loaded once the arguments are checked: @grpc/grpc-js-xds takes a while to load.
let grpc;

const MAX_CALLS = 10000; // per batch
const MAX_TIMEOUT_MS = 60000;

function usage(msg) {
  process.stderr.write(`nodeclient: ${msg}\n` +
    'usage: node client.js --target xds:///<host>:<port> [--sni NAME] (--calls N | --stdin) [--timeout-ms MS] [--no-wait-for-ready]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { target: '', sni: '', calls: 0, stdin: false, timeoutMs: 5000, waitForReady: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--target': opts.target = value(); break;
      case '--sni': opts.sni = value(); break;
      case '--calls': opts.calls = count('--calls', value(), MAX_CALLS); break;
      case '--timeout-ms': opts.timeoutMs = count('--timeout-ms', value(), MAX_TIMEOUT_MS); break;
      case '--stdin': opts.stdin = true; break;
      case '--no-wait-for-ready': opts.waitForReady = false; break;
      default: usage(`unknown argument ${JSON.stringify(a)}`);
    }
  }
  if (!/^xds:\/\/\/[^/]+:\d+$/.test(opts.target)) usage(`--target ${JSON.stringify(opts.target)}: want xds:///<host>:<port>`);
  if (opts.sni.length > 253) usage('--sni: longer than a DNS name (253)');
  if ((opts.calls > 0) === opts.stdin) usage('give exactly one of --calls N and --stdin');
  return opts;
}

function count(flag, s, max) {
  if (!/^\d+$/.test(s)) usage(`${flag} ${JSON.stringify(s)}: want a whole number`);
  const n = Number(s);
  if (n < 1 || n > max) usage(`${flag} ${n}: want 1 to ${max}`);
  return n;
}

function newClient(opts) {
  grpc = require('@grpc/grpc-js');
  const protoLoader = require('@grpc/proto-loader');
  const grpcXds = require('@grpc/grpc-js-xds');
  grpcXds.register();
  const def = protoLoader.loadSync(path.join(__dirname, 'test.proto'), { keepCase: true, defaults: true });
  const TestService = grpc.loadPackageDefinition(def).grpc.testing.TestService;
  const channelOptions = {};
  if (opts.sni) channelOptions['grpc.ssl_target_name_override'] = opts.sni;
  const creds = new grpcXds.XdsChannelCredentials(grpc.credentials.createInsecure());
  return new TestService(opts.target, creds, channelOptions);
}

// call makes one call and resolves to its result.
function call(client, opts) {
  const md = new grpc.Metadata({ waitForReady: opts.waitForReady });
  const start = process.hrtime.bigint();
  return new Promise((resolve) => {
    client.UnaryCall({ fill_server_id: true }, md, { deadline: Date.now() + opts.timeoutMs }, (err, resp) => {
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      if (err) resolve({ error: `${grpc.status[err.code] || err.code}: ${err.details || err.message}`, ms });
      else resolve({ version: resp.server_id, pod: resp.hostname, ms });
    });
  });
}

async function batch(client, n, opts) {
  const out = { calls: n, failed: 0, versions: {}, results: [] };
  for (let i = 0; i < n; i++) {
    const r = await call(client, opts);
    if (r.error) out.failed++;
    else out.versions[r.version] = (out.versions[r.version] || 0) + 1;
    out.results.push(r);
  }
  return out;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const client = newClient(opts);
  if (!opts.stdin) {
    const out = await batch(client, opts.calls, opts);
    process.stdout.write(JSON.stringify(out) + '\n');
    client.close();
    process.exit(out.failed > 0 ? 1 : 0);
  }
  const lines = readline.createInterface({ input: process.stdin, terminal: false });
  for await (const line of lines) {
    const s = line.trim();
    if (s === '') continue;
    if (!/^\d+$/.test(s) || Number(s) < 1 || Number(s) > MAX_CALLS) {
      process.stdout.write(JSON.stringify({ error: `input line ${JSON.stringify(s.slice(0, 40))}: want a number of calls, 1 to ${MAX_CALLS}` }) + '\n');
      continue;
    }
    process.stdout.write(JSON.stringify(await batch(client, Number(s), opts)) + '\n');
  }
  client.close();
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`nodeclient: ${err && err.stack || err}\n`);
  process.exit(1);
});
