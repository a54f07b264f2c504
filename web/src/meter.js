// The microphone level meter: a Web Audio analyser on the local microphone track.

/** Feeds `onLevel(0..1)` with the loudness of a MediaStreamTrack until stopped. */
export class MicMeter {
  constructor({ onLevel }) {
    this._onLevel = onLevel;
    this._context = null;
    this._source = null;
    this._frame = 0;
  }

  /** Create (or resume) the AudioContext; call it inside the user's click so it may start. */
  unlock() {
    const Context = window.AudioContext ?? window.webkitAudioContext;
    if (!Context) return;
    this._context ??= new Context();
    if (this._context.state === "suspended") this._context.resume().catch(() => {});
  }

  /** Measure `mediaStreamTrack` (replacing any track measured before). */
  attach(mediaStreamTrack) {
    this.detach();
    if (this._context === null) return;
    const source = this._context.createMediaStreamSource(new MediaStream([mediaStreamTrack]));
    const analyser = this._context.createAnalyser();
    analyser.fftSize = 1024;
    source.connect(analyser);
    this._source = source;
    const samples = new Float32Array(analyser.fftSize);
    const tick = () => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const s of samples) sum += s * s;
      const rms = Math.sqrt(sum / samples.length);
      // dBFS from -60 (silence) to 0 (full scale), mapped to 0..1.
      const db = rms > 0 ? 20 * Math.log10(rms) : -100;
      this._onLevel(Math.max(0, Math.min(1, (db + 60) / 60)));
      this._frame = requestAnimationFrame(tick);
    };
    this._frame = requestAnimationFrame(tick);
  }

  detach() {
    cancelAnimationFrame(this._frame);
    this._frame = 0;
    if (this._source !== null) this._source.disconnect();
    this._source = null;
    this._onLevel(0);
  }
}
