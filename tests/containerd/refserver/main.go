// Command refserver serves one of containerd's own snapshotters (native or
// overlayfs) over the snapshots gRPC service on a unix socket, the way a
// containerd proxy snapshotter plugin is served. It is the reference server
// for the conformance harness in ../suite: the suite run against it shows
// that the harness works and records containerd's reference behaviour.
//
// Usage: refserver -root DIR -socket PATH [-kind native|overlayfs] [-fault walk-omits-first]
//
// -fault makes the served snapshotter deliberately non-conforming, to prove
// that the harness notices: walk-omits-first leaves the first snapshot out of
// every Walk (the bug that makes containerd's garbage collector leak it).
//
// It stops on SIGTERM or SIGINT: the gRPC server stops, the snapshotter is
// closed and the socket is removed.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/native"
	"github.com/containerd/containerd/snapshots/overlay"
	"google.golang.org/grpc"
)

func main() {
	root := flag.String("root", "", "snapshotter root directory (required)")
	socket := flag.String("socket", "", "unix socket to listen on (required)")
	kind := flag.String("kind", "native", "snapshotter to serve: native or overlayfs")
	fault := flag.String("fault", "", "deliberate deviation to serve (harness self-test): walk-omits-first")
	flag.Parse()
	if err := run(*root, *socket, *kind, *fault); err != nil {
		fmt.Fprintf(os.Stderr, "refserver: %v\n", err)
		os.Exit(1)
	}
}

func newSnapshotter(kind, root string) (snapshots.Snapshotter, error) {
	switch kind {
	case "native":
		return native.NewSnapshotter(root)
	case "overlayfs":
		return overlay.NewSnapshotter(root)
	default:
		return nil, fmt.Errorf("unknown snapshotter kind %q (want native or overlayfs)", kind)
	}
}

// walkOmitsFirst is a snapshotter whose Walk skips the first snapshot.
type walkOmitsFirst struct {
	snapshots.Snapshotter
}

func (w walkOmitsFirst) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	first := true
	return w.Snapshotter.Walk(ctx, func(ctx context.Context, info snapshots.Info) error {
		if first {
			first = false
			return nil
		}
		return fn(ctx, info)
	}, filters...)
}

func withFault(sn snapshots.Snapshotter, fault string) (snapshots.Snapshotter, error) {
	switch fault {
	case "":
		return sn, nil
	case "walk-omits-first":
		return walkOmitsFirst{sn}, nil
	default:
		return nil, fmt.Errorf("unknown fault %q (want walk-omits-first)", fault)
	}
}

func run(root, socket, kind, fault string) error {
	if root == "" || socket == "" {
		return fmt.Errorf("-root and -socket are required")
	}
	sn, err := newSnapshotter(kind, root)
	if err != nil {
		return fmt.Errorf("creating %s snapshotter in %s: %w", kind, root, err)
	}
	defer sn.Close()
	sn, err = withFault(sn, fault)
	if err != nil {
		return err
	}

	if err := os.Remove(socket); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("removing stale socket %s: %w", socket, err)
	}
	l, err := net.Listen("unix", socket)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", socket, err)
	}
	defer os.Remove(socket)

	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		srv.Stop()
	}()
	fmt.Fprintf(os.Stderr, "refserver: serving %s snapshotter, root %s, socket %s\n", kind, root, socket)
	if err := srv.Serve(l); err != nil {
		return fmt.Errorf("serving on %s: %w", socket, err)
	}
	return nil
}
