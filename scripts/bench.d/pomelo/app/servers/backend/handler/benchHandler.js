'use strict';
// The pomelo peer of the cluster figures: a backend server (no client port) that the connector
// reaches over pomelo's own RPC. Route: backend.benchHandler.ping.
module.exports = function (app) {
  return new Handler(app);
};

function Handler(app) {
  this.app = app;
}

Handler.prototype.ping = function (msg, session, next) {
  delete msg.__route__;
  next(null, msg);
};

// broadcast: one channel on the backend whose members sit on the connectors (pomelo's channel
// service pushes through each member's frontend over its RPC)
Handler.prototype.join = function (msg, session, next) {
  const uid = `${session.frontendId}:${session.id}`;
  session.bind(uid, () => {
    this.app.get('channelService').getChannel('bench', true).add(uid, session.frontendId);
    next(null, {});
  });
};

Handler.prototype.bcast = function (msg, session, next) {
  delete msg.__route__;
  this.app.get('channelService').getChannel('bench', true).pushMessage('onBcast', msg, () => {});
  next(null, {});
};
