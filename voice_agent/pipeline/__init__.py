"""Pure stages of the voice pipeline, each testable without a room or a provider.

vad         VoiceActivityDetector: 16 kHz int16 PCM in, SPEECH_START / SPEECH_END events out
vad_model   SpeechProbabilityModel protocol and SileroVadModel (offline Silero VAD)
turn        TurnDetector protocol and the default SilenceTurnDetector
chunker     SentenceChunker: LLM text deltas in, speakable chunks out
resample    StreamResampler: streaming int16 resampling between room, STT and TTS rates
context     ConversationContext: chat history bounded by a token budget

Modules are imported one by one (`from voice_agent.pipeline.vad import ...`) so that using the
chunker does not load the VAD model or LiveKit's native library.
"""
