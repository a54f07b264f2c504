"""After the call: the durable hand-over, the queue, the report, the side effects, the store.

    agent ── PostCallSink (handover) ── spool on disk ── Redis: record + arq job `process_call`
    LiveKit room_finished ── server.webhooks ──────────┘ (same job id: one job per call)
    voice-agent postcall (worker) ── ReportWriter (reporter; fallback) ── integrations ── store

See docs/postcall.md.
"""
