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
  app.set('connectorConfig', {
    connector: pomelo.connectors.hybridconnector,
    heartbeat: Number(process.env.NH_BENCH_HEARTBEAT || 10),
    useDict: false,
    useProtobuf: false,
  });
});
app.start();

process.on('uncaughtException', function (err) {
  console.error(' Caught exception: ' + err.stack);
});
