// Logto's own SMTP connector (@logto/connector-smtp), driven the way Logto core drives it, for
// the bench's delay scenario: build it with createConnector({getConfig}) and call
// sendMessage({to, type, payload}) `count` times, `concurrency` at a time, each to a new
// recipient; print one line of JSON with the throughput and latencies.
//
// Job (JSON, argv[2]): {config, count, concurrency, seconds, warmup, seq}
// The connector creates a nodemailer transport per message (a new connection, EHLO, STARTTLS,
// EHLO, AUTH, then MAIL, RCPT, DATA), as Logto runs it.

import createConnector from '@logto/connector-smtp';

const job = JSON.parse(process.argv[2]);
const connector = await createConnector({ getConfig: async () => job.config });

let seq = job.seq ?? 0;
const sendOne = () =>
  connector.sendMessage({
    to: `user${seq++}@example.com`,
    type: 'SignIn',
    payload: { code: '123456', locale: 'en' },
  });

const run = async (count, concurrency, seconds) => {
  const latencies = [];
  const errors = new Map();
  const deadline = performance.now() + seconds * 1000;
  let started = 0;
  const worker = async () => {
    while (started < count && performance.now() < deadline) {
      started += 1;
      const t0 = performance.now();
      try {
        await sendOne();
      } catch (error) {
        const key = String(error?.message ?? error).slice(0, 200);
        errors.set(key, (errors.get(key) ?? 0) + 1);
      }
      latencies.push(performance.now() - t0);
    }
  };
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  latencies.sort((a, b) => a - b);
  const pct = (p) =>
    latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] : null;
  const failed = [...errors.values()].reduce((a, b) => a + b, 0);
  return {
    requests: latencies.length,
    errors: failed,
    error_samples: Object.fromEntries([...errors.entries()].slice(0, 3)),
    seconds: elapsed,
    rps: elapsed > 0 ? (latencies.length - failed) / elapsed : 0,
    p50_ms: pct(50),
    p99_ms: pct(99),
    max_ms: latencies.length ? latencies[latencies.length - 1] : null,
    concurrency,
    loadgen_cpu_pct: elapsed > 0 ? (100 * (cpu.user + cpu.system)) / 1e6 / elapsed : null,
  };
};

if (job.warmup) {
  await run(job.warmup, Math.min(job.concurrency, job.warmup), 60);
}
const result = await run(job.count, job.concurrency, job.seconds);
process.stdout.write(`${JSON.stringify(result)}\n`);
