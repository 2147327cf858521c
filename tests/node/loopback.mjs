// Preloaded with `node --import ./loopback.mjs` in front of servers that offer no way to choose
// their listen address (server-everything calls app.listen(PORT)): every TCP listen that names
// a port but no host binds 127.0.0.1 instead of all interfaces, so test peers stay unreachable
// from outside the machine. Listens on a path (Unix socket) or with an explicit host are left
// alone.
import net from "node:net";

const loopback = "127.0.0.1";
const listen = net.Server.prototype.listen;

function isPort(value) {
  return typeof value === "number" || (typeof value === "string" && /^\d+$/.test(value));
}

net.Server.prototype.listen = function (...args) {
  const [first, second] = args;
  if (isPort(first) && typeof second !== "string") {
    args.splice(1, 0, loopback);
  } else if (first !== null && typeof first === "object" && !(first instanceof net.Server) &&
      first.path === undefined && first.host === undefined && first.fd === undefined &&
      first.handle === undefined && first._handle === undefined) {
    args[0] = { ...first, host: loopback };
  }
  return listen.apply(this, args);
};
