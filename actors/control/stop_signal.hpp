// stop_signal: SIGTERM/SIGINT as a flag a service's main thread waits on (ARCHITECTURE.md §12:
// stop admitting, drain, exit 0). Installed once per process; async-signal-safe (the handler
// only writes one byte to a pipe). No CAF.
#pragma once

#include <chrono>

namespace longcat::control {

// Installs the handlers (idempotent). Call before starting threads so they inherit the mask.
void install_stop_signal_handlers();
// True once SIGTERM or SIGINT arrived, or request_stop() was called.
bool stop_requested();
// Waits until a stop is requested or `timeout` passes; returns stop_requested().
bool wait_for_stop(std::chrono::milliseconds timeout);
// Lets the service stop itself (e.g. its coordinator refused it), waking wait_for_stop.
void request_stop();

}  // namespace longcat::control
