'use strict';
// The pomelo peer's handlers: the same routes as nano-host's bench main.lua and the floor.
// Routes: connector.entryHandler.ping / .note / .join / .bcast.

module.exports = function (app) {
  return new Handler(app);
};

function Handler(app) {
  this.app = app;
  this.members = new Map(); // session id -> frontend session, for the broadcast group
}

// pomelo adds the route to every message it hands a handler; an echo gives back what came
const own = (msg) => {
  delete msg.__route__;
  return msg;
};

// ping-pong: the request's payload is the response
Handler.prototype.ping = function (msg, session, next) {
  next(null, own(msg));
};

// notify + push: the notify's payload comes back as a push on "onNote"
Handler.prototype.note = function (msg, session, next) {
  // what pomelo's channel push does on the frontend itself, minus the uid lookup
  this.app.components.__connector__.send(null, 'onNote', own(msg), [session.id],
    { type: 'push', userOptions: {}, isPush: true }, () => {});
  next();
};

// broadcast group: pomelo's own channel service on this frontend
Handler.prototype.join = function (msg, session, next) {
  const uid = String(session.id);
  session.bind(uid, () => {
    const ch = this.app.get('channelService').getChannel('bench', true);
    ch.add(uid, this.app.getServerId());
    session.on('closed', () => ch.leave(uid, this.app.getServerId()));
    next(null, {});
  });
};

Handler.prototype.bcast = function (msg, session, next) {
  this.app.get('channelService').getChannel('bench', true).pushMessage('onBcast', own(msg), () => {});
  next(null, {});
};
