// Preloaded (`node --import`) into every Node peer the tests start: the reference servers listen on all
// interfaces and on a fixed port unless told otherwise, and not all of them can be told. This binds every
// TCP listener to 127.0.0.1 (port 0 lets the kernel choose) and reports the address it got on stderr,
// which is how fixtures/npm_peers.py learns the port without racing another process for it.
import net from "node:net";

const listen = net.Server.prototype.listen;

net.Server.prototype.listen = function (...args) {
  const callback = typeof args[args.length - 1] === "function" ? [args[args.length - 1]] : [];
  const first = args[0];
  if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))) {
    args = [{ port: Number(first), host: "127.0.0.1" }, ...callback];
  } else if (first && typeof first === "object" && first.path === undefined && first.fd === undefined) {
    args = [{ ...first, host: "127.0.0.1" }, ...callback];
  }
  this.once("listening", () => {
    const where = this.address();
    if (where && typeof where === "object") {
      process.stderr.write(`chatops-interop listening ${where.address} ${where.port}\n`);
    }
  });
  return listen.apply(this, args);
};
