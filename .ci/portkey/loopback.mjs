// Preloaded into the Portkey gateway (node --import) for tests: its start
// script listens on every interface, and a test peer must listen on loopback
// only. Every TCP listen is pinned to 127.0.0.1; the port is left as asked.
//
// With PORTKEY_PORT_FILE set, the port it listens on is written there once
// it listens (whole, by a rename), so a test can start it on port 0 and
// learn the port the kernel gave, instead of guessing a free one that
// another process may take first.
import fs from "node:fs";
import net from "node:net";

const listen = net.Server.prototype.listen;
const portFile = process.env.PORTKEY_PORT_FILE;

function announce(server) {
  if (!portFile) {
    return;
  }
  server.once("listening", () => {
    const partial = `${portFile}.partial`;
    fs.writeFileSync(partial, String(server.address().port));
    fs.renameSync(partial, portFile);
  });
}

net.Server.prototype.listen = function (...args) {
  const [first] = args;
  announce(this);
  if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))) {
    const callback = args.find((arg) => typeof arg === "function");
    return listen.call(this, { port: Number(first), host: "127.0.0.1" }, callback);
  }
  if (first && typeof first === "object" && first.path === undefined) {
    args[0] = { ...first, host: "127.0.0.1" };
  }
  return listen.apply(this, args);
};
