"""`python -m voice_agent` is the `voice-agent` command."""

from voice_agent.cli import main

raise SystemExit(main())
