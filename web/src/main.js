// The browser voice client: entry point of the bundle (esbuild -> /static/dist/app.js).

import { LogLevel, setLogLevel } from "livekit-client";

import { CallController } from "./controller.js";

setLogLevel(LogLevel.warn);
new CallController();
