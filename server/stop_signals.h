// SIGTERM and SIGINT as events one thread waits for, rather than handlers:
// blocked in the calling thread before any other starts (threads inherit the
// mask), then taken by WaitForStopSignal.
#ifndef TCM_SERVER_STOP_SIGNALS_H_
#define TCM_SERVER_STOP_SIGNALS_H_

#include <signal.h>

namespace tcm {

// Blocks SIGTERM and SIGINT in the calling thread; call it before starting threads.
sigset_t BlockStopSignals();

// Waits for one of `signals` (from BlockStopSignals) and returns its number.
int WaitForStopSignal(const sigset_t& signals);

}  // namespace tcm

#endif  // TCM_SERVER_STOP_SIGNALS_H_
