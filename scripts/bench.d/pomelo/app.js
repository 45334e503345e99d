'use strict';
// The pomelo peer of scripts/bench: pomelo 2.2.7 from npm, one frontend connector server
// (hybridconnector: raw TCP and WebSocket on one port) with the echo handlers in app/.
// scripts/bench writes the config into NH_POMELO_BASE (ports, log levels) and links app/ there.
const pomelo = require('pomelo');

// On current Node, pomelo's raw-TCP socket passes its WebSocket send options ({binary: true})
// where net.Socket#write expects an encoding (ERR_UNKNOWN_ENCODING), so it never answers a
// handshake over TCP. Override the one method, leaving node_modules untouched.
const TcpSocket = require('pomelo/lib/connectors/hybrid/tcpsocket');
TcpSocket.prototype.send = function (msg, encode, cb) {
  this._socket.write(msg, typeof encode === 'string' ? encode : undefined, cb);
};

const app = pomelo.createApp({ base: process.env.NH_POMELO_BASE });
app.set('name', 'nh-bench');
app.configure('development', 'connector', function () {
  const config = {
    connector: pomelo.connectors.hybridconnector,
    heartbeat: Number(process.env.NH_BENCH_HEARTBEAT || 10),
    useDict: false,
    useProtobuf: false,
  };
  // The TLS figures: hybridconnector serves TLS (TCP and wss on its one port) with node's tls.
  const tlsDir = process.env.NH_BENCH_TLS_DIR;
  if (tlsDir) {
    const fs = require('fs');
    config.ssl = { key: fs.readFileSync(tlsDir + '/key.pem'), cert: fs.readFileSync(tlsDir + '/cert.pem') };
  }
  app.set('connectorConfig', config);
});
app.start();

process.on('uncaughtException', function (err) {
  console.error(' Caught exception: ' + err.stack);
});
