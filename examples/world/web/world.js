// The world page: enter, draw what the server sends (onState), click to move, say things.
(function () {
  'use strict';

  const params = new URLSearchParams(location.search);
  const canvas = document.getElementById('view');
  const ctx = canvas.getContext('2d');
  const status = document.getElementById('status');
  const form = document.getElementById('say');
  const input = document.getElementById('text');

  const client = new NanoClient();
  window.worldClient = client;
  const state = { me: null, world: null, entities: [], tick: 0, bubbles: new Map() };
  window.worldState = state; // for the console

  function setStatus(s, label) {
    status.dataset.state = s;
    status.textContent = label;
  }

  // The camera follows you, in the middle, zoomed so that about one view distance around you
  // fits the canvas' height. scr() turns world units into canvas pixels.
  function camera() {
    const me = state.entities.find((e) => e.id === state.me) || { x: 0, y: 0 };
    const scale = state.world ? canvas.height / (2.2 * state.world.view) : 1;
    return { x: me.x - canvas.width / 2 / scale, y: me.y - canvas.height / 2 / scale, scale };
  }
  const scr = (cam, x, y) => [(x - cam.x) * cam.scale, (y - cam.y) * cam.scale];

  function colorOf(id) {
    return 'hsl(' + ((id * 67) % 360) + ', 70%, 62%)';
  }

  function draw() {
    const cam = camera();
    ctx.fillStyle = '#123a5a';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (state.world) {
      // the world's edge and its view-sized grid
      ctx.strokeStyle = 'rgba(255,255,255,0.08)';
      ctx.lineWidth = 1;
      const size = state.world.size;
      for (let v = 0; v <= size; v += state.world.view) {
        ctx.beginPath();
        ctx.moveTo(...scr(cam, v, 0));
        ctx.lineTo(...scr(cam, v, size));
        ctx.moveTo(...scr(cam, 0, v));
        ctx.lineTo(...scr(cam, size, v));
        ctx.stroke();
      }
      ctx.strokeStyle = 'rgba(255,255,255,0.35)';
      ctx.strokeRect(...scr(cam, 0, 0), size * cam.scale, size * cam.scale);
    }
    ctx.font = '12px system-ui, "DejaVu Sans", sans-serif';
    ctx.textAlign = 'center';
    const now = Date.now();
    for (const e of state.entities) {
      const [x, y] = scr(cam, e.x, e.y);
      ctx.beginPath();
      if (e.kind === 'fish') {
        ctx.fillStyle = 'rgba(200,214,229,0.75)';
        ctx.ellipse(x, y, 6, 4, 0, 0, 2 * Math.PI);
        ctx.fill();
        continue;
      }
      ctx.fillStyle = colorOf(e.id);
      ctx.arc(x, y, 10, 0, 2 * Math.PI);
      ctx.fill();
      if (e.id === state.me) {
        ctx.strokeStyle = '#fff';
        ctx.lineWidth = 2;
        ctx.beginPath();
        ctx.arc(x, y, 15, 0, 2 * Math.PI);
        ctx.stroke();
      }
      ctx.fillStyle = '#fff';
      ctx.fillText(e.name || '', x, y + 26);
      const bubble = state.bubbles.get(e.id);
      if (bubble && bubble.until > now) {
        const w = ctx.measureText(bubble.text).width + 12;
        ctx.fillStyle = 'rgba(255,255,255,0.92)';
        ctx.fillRect(x - w / 2, y - 40, w, 20);
        ctx.fillStyle = '#1f2933';
        ctx.fillText(bubble.text, x, y - 26);
      }
    }
  }

  client.on('onState', (msg) => {
    state.tick = msg.tick;
    state.entities = msg.entities;
    draw();
  });
  client.on('onSay', (msg) => state.bubbles.set(msg.id, { text: msg.text, until: Date.now() + 4000 }));
  client.on('onLeave', (msg) => state.bubbles.delete(msg.id));
  client.on('close', () => setStatus('offline', 'offline — reload the page to reconnect'));

  canvas.addEventListener('click', (ev) => {
    if (!state.me) return;
    const r = canvas.getBoundingClientRect();
    const cam = camera();
    const x = ((ev.clientX - r.left) * canvas.width) / r.width / cam.scale + cam.x;
    const y = ((ev.clientY - r.top) * canvas.height) / r.height / cam.scale + cam.y;
    client.notify('World.move', { x, y });
  });

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    if (text && state.me) client.notify('World.say', { text });
    input.value = '';
  });

  const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + (params.get('path') || '/nano');
  client
    .connect(url)
    .then(() => client.request('World.enter', { name: params.get('name') || '' }))
    .then((res) => {
      state.me = res.id;
      state.world = res;
      setStatus('online', 'online — you are ' + res.name);
    })
    .catch((err) => setStatus('offline', 'offline: ' + err.message));
})();
