package conformance

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// checkRecoverable asserts the error the agent retries under the restart
// policy: FAILED_PRECONDITION with details[0] = RecoverableError{true}.
func checkRecoverable(t *testing.T, err error) {
	t.Helper()
	wantCode(t, err, codes.FailedPrecondition, "")
	if err == nil {
		return
	}
	rec, derr := StatusDetail0(err, StructsPkg+"RecoverableError")
	if derr != nil {
		t.Errorf("recoverable error detail: %v (error was %v)", derr, err)
		return
	}
	if AsMap(rec)["recoverable"] != true {
		t.Errorf("RecoverableError.recoverable = %v, want true", AsMap(rec)["recoverable"])
	}
}

// TestStartTaskWhileUndetected: starting a task on a driver that cannot run
// is a retryable (recoverable) error.
func TestStartTaskWhileUndetected(t *testing.T) {
	t.Parallel()
	in := Launch(t)
	mustSetConfig(t, in, encodePlugin(t, in, undetectedPlugin), true)
	_, err := call(t, in, mStartTask, startTaskReq(t, encodeTask(t, in, taskBlock(t, in, `["image", "tls"]`))))
	checkRecoverable(t, err)
}

// deathCodes are what the agent reads as "the plugin process died".
var deathCodes = map[codes.Code]bool{codes.Unavailable: true, codes.Canceled: true, codes.DeadlineExceeded: true}

// TestUnknownTaskID: per-task RPCs for an id the plugin never saw answer
// promptly, never with a code the agent takes for plugin death, and never
// with an OK response missing a field the agent dereferences.
func TestUnknownTaskID(t *testing.T) {
	t.Parallel()
	in := Launch(t)
	mustSetConfig(t, in, encodePlugin(t, in, `plugin "rkt" {}`), true)
	const id = `{"task_id": "nosuchalloc/web/00000000"}`

	checkErr := func(rpc string, err error) bool {
		if err == nil {
			return false
		}
		if st, _ := status.FromError(err); deathCodes[st.Code()] {
			t.Errorf("%s for an unknown task: code %v (read by the agent as plugin death): %s", rpc, st.Code(), st.Message())
		}
		return true
	}

	resp, err := call(t, in, mWaitTask, id)
	if !checkErr("WaitTask", err) {
		t.Errorf("WaitTask for an unknown task returned OK (result=%v); want an error status", AsMap(resp)["result"])
		if Field(resp, "result") == nil {
			t.Errorf("WaitTask returned OK with result unset: the agent would panic")
		}
	}

	resp, err = call(t, in, mInspectTask, id)
	if !checkErr("InspectTask", err) {
		for _, f := range []string{"task"} {
			if Field(resp, f) == nil {
				t.Errorf("InspectTask returned OK for an unknown task with %s unset", f)
			}
		}
	}

	// Stop/Destroy may succeed (idempotent) or fail, but must not hang.
	_, err = call(t, in, mStopTask, `{"task_id": "nosuchalloc/web/00000000", "timeout": "1s", "signal": "SIGTERM"}`)
	checkErr("StopTask", err)
	_, err = call(t, in, mDestroyTask, `{"task_id": "nosuchalloc/web/00000000", "force": true}`)
	checkErr("DestroyTask", err)
	_, err = call(t, in, mSignalTask, `{"task_id": "nosuchalloc/web/00000000", "signal": "SIGHUP"}`)
	if !checkErr("SignalTask", err) {
		t.Errorf("SignalTask for an unknown task returned OK")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := OpenStream(ctx, in.Conn, mTaskStats, `{"task_id": "nosuchalloc/web/00000000", "collection_interval": "1s"}`)
	if err == nil {
		_, err = s.Recv()
	}
	switch {
	case err == nil:
		t.Errorf("TaskStats streamed a sample for an unknown task")
	case errors.Is(err, io.EOF):
		t.Errorf("TaskStats for an unknown task ended cleanly; the agent would re-open it forever")
	default:
		checkErr("TaskStats", err)
	}
	checkPluginInfo(t, in)
}
