// Calls d11's RPC services with Apache dubbo-js 2.x (`dubbo2.js` from the npm registry): a
// Dubbo 2 client that is not ours. It sends its attachments as a `java.util.HashMap` whose
// `timeout` is an int, as Dubbo 2.7 and later do.
//
//   node call.js ADDRESS:PORT SERVICE METHOD 'JSON ARGS'
//
// Each argument is typed with js-to-java: {"long": 1} is a java.lang.Long, a string is a
// java.lang.String, null is a null String. Prints one JSON line: {"ok": true, "value": ...,
// "typed": ...} with `typed` the same answer decoded again keeping Hessian class names, or
// {"ok": false, "name": exception class, "message": ...} for a Java exception.
'use strict';
const { DirectlyDubbo } = require('dubbo2.js');
const java = require('js-to-java');
const hessian = require('hessian.js');
const decodeModule = require('dubbo2.js/es7/decode');

const [address, service, method, argsJson] = process.argv.slice(2);
if (!argsJson) {
  console.error('usage: node call.js ADDRESS:PORT SERVICE METHOD JSON-ARGS');
  process.exit(2);
}

// Keep the raw answer so the test can see Hessian's class names (dubbo2.js drops them).
let typed = null;
const decode = decodeModule.decode;
decodeModule.decode = (bytes) => {
  try {
    const body = new hessian.DecoderV2(bytes.slice(16));
    const flag = body.readInt();
    if (flag === 1 || flag === 4) typed = body.read(true);
  } catch (e) {
    typed = { error: String(e) };
  }
  return decode(bytes);
};

const toJava = (a) => {
  if (a === null) return java.String(null);
  if (typeof a === 'string') return java.String(a);
  if (typeof a === 'object' && 'long' in a) return java.Long(String(a.long));
  if (typeof a === 'object' && 'int' in a) return java.int(a.int);
  throw new Error('unsupported argument ' + JSON.stringify(a));
};
const args = JSON.parse(argsJson).map(toJava);

const dubbo = DirectlyDubbo.from({
  dubboAddress: address,
  dubboVersion: '2.0.2',
  dubboInvokeTimeout: 10,
});
const svc = dubbo.proxyService({
  dubboInterface: service,
  version: '0.0.0',
  timeout: 3000,
  methods: { [method]: () => args },
});

const done = (out) => {
  console.log(JSON.stringify(out, (k, v) => (typeof v === 'bigint' ? Number(v) : v)));
  process.exit(0);
};
svc[method]().then(({ res, err }) => {
  if (err) {
    done({ ok: false, name: err.name, message: err.message });
  } else {
    done({ ok: true, value: res, typed });
  }
}).catch((e) => done({ ok: false, name: e.name, message: String(e.message || e) }));
setTimeout(() => done({ ok: false, name: 'timeout', message: 'no answer in 15 s' }), 15000).unref();
