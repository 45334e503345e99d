// The chat page: joins the room, shows what the server pushes, sends what you type.
// Same routes and payloads as nano's chat demo (see examples/chat/room.lua).
(function () {
  'use strict';

  const params = new URLSearchParams(location.search);
  const messages = document.getElementById('messages');
  const status = document.getElementById('status');
  const form = document.getElementById('composer');
  const nameInput = document.getElementById('name');
  const textInput = document.getElementById('text');
  const sendButton = document.getElementById('send');

  nameInput.value = params.get('name') || 'guest' + Math.floor(Math.random() * 10000);

  function setStatus(state, label) {
    status.dataset.state = state;
    status.textContent = label;
    sendButton.disabled = state !== 'online';
  }

  // Text goes in with textContent: whatever people type is never parsed as HTML.
  function addLine(kind, name, content) {
    const li = document.createElement('li');
    li.className = kind;
    if (name) {
      const who = document.createElement('span');
      who.className = 'who';
      who.textContent = name;
      who.style.color = colorOf(name);
      li.appendChild(who);
    }
    const text = document.createElement('span');
    text.className = 'content';
    text.textContent = content;
    li.appendChild(text);
    messages.appendChild(li);
    messages.scrollTop = messages.scrollHeight;
  }

  function colorOf(name) {
    let h = 0;
    for (const ch of name) h = (h * 31 + ch.codePointAt(0)) % 360;
    return 'hsl(' + h + ', 55%, 38%)';
  }

  const client = new NanoClient();
  window.chatClient = client; // for the console (and the browser test)

  client.on('onMembers', (data) => {
    const others = data && Array.isArray(data.members) ? data.members : [];
    addLine('system', null, others.length ? 'members: ' + others.join(', ') : 'you are the first one here');
  });
  client.on('onNewUser', (data) => addLine('system', null, data.content));
  client.on('onMessage', (data) => addLine('message', data.name, data.content));
  client.on('kick', () => addLine('system', null, 'kicked by the server'));
  client.on('close', () => setStatus('offline', 'offline — reload the page to reconnect'));

  const path = params.get('path') || '/nano';
  const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + path;

  client
    .connect(url)
    .then(() => client.request('room.join', {}))
    .then((res) => {
      if (res.code !== 0) throw new Error('join refused: ' + JSON.stringify(res));
      addLine('system', null, 'joined the room (' + res.result + ')');
      setStatus('online', 'online');
      textInput.focus();
    })
    .catch((err) => {
      addLine('system error', null, err.message);
      setStatus('offline', 'offline');
    });

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const content = textInput.value.trim();
    if (!content) return;
    client.notify('room.message', { name: nameInput.value.trim() || 'guest', content });
    textInput.value = '';
  });
})();
