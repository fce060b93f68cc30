package conformance

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// TestGoPluginServices: the side services go-plugin clients talk to.
func TestGoPluginServices(t *testing.T) {
	t.Parallel()
	in := Launch(t)

	h, err := grpc_health_v1.NewHealthClient(in.Conn).Check(ctxT(t, 5*time.Second),
		&grpc_health_v1.HealthCheckRequest{Service: "plugin"})
	if err != nil {
		t.Errorf("grpc.health.v1.Health/Check(plugin): %v", err)
	} else if h.GetStatus() != grpc_health_v1.HealthCheckResponse_SERVING {
		t.Errorf("health of service \"plugin\" = %v, want SERVING", h.GetStatus())
	}

	// StreamStdio may stream (and stay open) or be UNIMPLEMENTED.
	ctx, cancel := context.WithCancel(context.Background())
	s, err := OpenStream(ctx, in.Conn, mStreamStdio, nil)
	if err == nil {
		ch := recvAsync(s)
		select {
		case r := <-ch:
			if r.err != nil && status.Code(r.err) != codes.Unimplemented {
				t.Errorf("StreamStdio: %v (want data, an open stream, or UNIMPLEMENTED)", r.err)
			}
		case <-time.After(time.Second):
		}
	} else if status.Code(err) != codes.Unimplemented {
		t.Errorf("StreamStdio: %v", err)
	}
	cancel()
	checkPluginInfo(t, in)
	in.MustKillGracefully(t)
}
