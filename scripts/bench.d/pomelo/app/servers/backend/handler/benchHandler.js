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
