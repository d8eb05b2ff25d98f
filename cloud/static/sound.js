// qwatch dashboard: the alarm sound and vibration.
// Browsers allow audio (and vibration) only after the user has touched the page, so sound is "on" by
// default but armed by the first tap anywhere; until then a hint asks for that tap. The on/off choice is
// remembered in localStorage. An escalated alert sounds louder and repeats until it is acknowledged.
// sound.log records every alarm (level, whether audio played, whether vibration was accepted) for the
// dashboard tests and for anyone debugging a silent phone.
"use strict";

const SOUND_KEY = "qwatch.sound";
const ESCALATION_REPEAT_MS = 10_000;
const sound = {
  enabled: localStorage.getItem(SOUND_KEY) !== "off",
  ctx: null,
  armed: false,
  repeatTimer: null,
  log: [],
};
const PATTERNS = {
  // [frequency Hz, start s, length s, gain]
  alert: [[880, 0, 0.18, 0.35], [880, 0.3, 0.18, 0.35], [880, 0.6, 0.18, 0.35]],
  escalation: [[988, 0, 0.22, 0.9], [740, 0.25, 0.22, 0.9], [988, 0.5, 0.22, 0.9], [740, 0.75, 0.22, 0.9],
    [988, 1.0, 0.22, 0.9], [740, 1.25, 0.4, 0.9]],
};
const VIBRATE = { alert: [300, 150, 300], escalation: [600, 200, 600, 200, 600, 200, 600] };

function renderSoundButton() {
  const b = $("#sound");
  b.textContent = t(sound.enabled ? "sound.on" : "sound.off");
  b.setAttribute("aria-pressed", String(sound.enabled));
  b.classList.toggle("off", !sound.enabled);
  $("#sound-hint").hidden = !sound.enabled || sound.armed || !auth.me;
}

// The first touch, click or key press anywhere creates (or resumes) the audio context.
function armSound() {
  if (sound.armed) return;
  try {
    sound.ctx = sound.ctx || new AudioContext();
    if (sound.ctx.state === "suspended") sound.ctx.resume();
    sound.armed = true;
  } catch (e) { sound.armed = false; }
  renderSoundButton();
}

function initSound() {
  for (const ev of ["pointerdown", "keydown", "touchstart"]) {
    window.addEventListener(ev, armSound, { capture: true, passive: true });
  }
  $("#sound").addEventListener("click", () => {
    sound.enabled = !sound.enabled;
    localStorage.setItem(SOUND_KEY, sound.enabled ? "on" : "off");
    if (!sound.enabled) stopEscalationRepeat();
    renderSoundButton();
  });
  onLangChange(renderSoundButton);
  renderSoundButton();
}

function playPattern(level) {
  if (!sound.ctx || sound.ctx.state !== "running") return false;
  const now = sound.ctx.currentTime;
  for (const [freq, at, len, gain] of PATTERNS[level]) {
    const o = sound.ctx.createOscillator();
    const g = sound.ctx.createGain();
    o.type = level === "escalation" ? "square" : "sine";
    o.frequency.value = freq;
    o.connect(g);
    g.connect(sound.ctx.destination);
    g.gain.setValueAtTime(gain, now + at);
    o.start(now + at);
    o.stop(now + at + len);
  }
  return true;
}

// Sound (and vibrate) once at `level` ("alert" or "escalation"). Never throws: the banner is the alarm.
function alarm(level) {
  const entry = { level, at: Date.now() / 1000, played: false, vibrated: false };
  if (sound.enabled) {
    try { entry.played = playPattern(level); } catch (e) { entry.played = false; }
    try {
      if (typeof navigator.vibrate === "function") entry.vibrated = navigator.vibrate(VIBRATE[level]) === true;
    } catch (e) { entry.vibrated = false; }
  }
  sound.log.push(entry);
  if (sound.log.length > 100) sound.log.shift();
  return entry;
}

// Repeat the escalation alarm while `stillEscalated()` says some escalated alert is unacknowledged.
function startEscalationRepeat(stillEscalated) {
  if (sound.repeatTimer !== null) return;
  sound.repeatTimer = setInterval(() => {
    if (!stillEscalated() || !sound.enabled) { stopEscalationRepeat(); return; }
    alarm("escalation");
  }, ESCALATION_REPEAT_MS);
}
function stopEscalationRepeat() {
  clearInterval(sound.repeatTimer);
  sound.repeatTimer = null;
}
