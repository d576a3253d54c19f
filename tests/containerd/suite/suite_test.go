// Package suite runs containerd's snapshotter conformance suite
// (snapshots/testsuite.SnapshotterSuite) through containerd's own proxy
// client (snapshots/proxy) against a snapshotter served over gRPC on a unix
// socket, exactly the path containerd takes to a proxy snapshotter plugin.
//
// The suite asks for a fresh snapshotter per test, so the harness starts a
// fresh server per test from a command template, waits until its socket
// answers, and stops it by PID in the test's cleanup. The template is taken
// from -snapshotter-cmd or STRATA_SNAPSHOTTER_CMD; "{root}" and "{socket}"
// in it are replaced by the test's snapshotter root and socket path (shell
// quoted), and the result is run with /bin/sh -c "exec ...". Example:
//
//	STRATA_SNAPSHOTTER_CMD='strata --root {root} serve containerd --socket {socket}'
//
// The suite mounts the returned mounts itself, so it must run as root on the
// machine the server runs on.
package suite

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/log"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"google.golang.org/grpc"
)

var (
	cmdFlag = flag.String("snapshotter-cmd", "",
		"command template starting the snapshotter server; {root} and {socket} are substituted (default $STRATA_SNAPSHOTTER_CMD)")
	nameFlag = flag.String("snapshotter-name", "",
		"snapshotter name sent in every request and used in test names (default $STRATA_SNAPSHOTTER_NAME or strata)")
	startFlag = flag.Duration("start-timeout", 30*time.Second,
		"how long a started server may take until its socket accepts a gRPC connection")
	stopFlag = flag.Duration("stop-timeout", 10*time.Second,
		"how long a server may take to exit after SIGTERM before it gets SIGKILL")
)

// TestSnapshotterSuite runs the whole conformance suite against the server
// the command template starts.
func TestSnapshotterSuite(t *testing.T) {
	tmpl := *cmdFlag
	if tmpl == "" {
		tmpl = os.Getenv("STRATA_SNAPSHOTTER_CMD")
	}
	if tmpl == "" {
		t.Fatal("no snapshotter command: pass -snapshotter-cmd or set STRATA_SNAPSHOTTER_CMD " +
			"(e.g. 'strata --root {root} serve containerd --socket {socket}')")
	}
	if !strings.Contains(tmpl, "{socket}") {
		t.Fatalf("snapshotter command %q has no {socket} placeholder: the harness could not reach the server", tmpl)
	}
	if os.Geteuid() != 0 {
		t.Fatal("the conformance suite mounts the snapshotter's mounts itself: run it as root")
	}
	name := *nameFlag
	if name == "" {
		name = os.Getenv("STRATA_SNAPSHOTTER_NAME")
	}
	if name == "" {
		name = "strata"
	}
	testsuite.SnapshotterSuite(t, name, newSnapshotterFunc(tmpl, name))
}

// shellQuote quotes s for /bin/sh as one word.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// expand substitutes the placeholders of the command template.
func expand(tmpl, root, socket string) string {
	r := strings.NewReplacer("{root}", shellQuote(root), "{socket}", shellQuote(socket))
	return r.Replace(tmpl)
}

// lockedBuffer collects a server's output; the process writes it while the
// harness may read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// server is one started snapshotter server process.
type server struct {
	cmd     *exec.Cmd
	out     *lockedBuffer
	done    chan struct{} // closed when the process has exited
	err     error         // exit status, valid after done
	sockDir string
}

// newSnapshotterFunc returns the testsuite factory: per test it starts a
// server for root, connects the proxy client to it, and returns a cleanup
// that closes the connection and stops the server by PID.
func newSnapshotterFunc(tmpl, name string) testsuite.SnapshotterFunc {
	return func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		srv, socket, err := startServer(tmpl, root)
		if err != nil {
			return nil, nil, err
		}
		conn, err := dial(srv, socket)
		if err != nil {
			stopErr := srv.stop()
			return nil, nil, fmt.Errorf("%w (stop: %v)\nserver output:\n%s", err, stopErr, srv.out.String())
		}
		sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), name)
		cleanup := func() error {
			connErr := conn.Close()
			stopErr := srv.stop()
			// The test's logger only prints on failure (or with -v).
			log.G(ctx).Infof("snapshotter server output:\n%s", srv.out.String())
			if stopErr != nil {
				return stopErr
			}
			return connErr
		}
		return sn, cleanup, nil
	}
}

// startServer starts the command template for root with a socket in a new
// private directory (short enough for a unix socket path).
func startServer(tmpl, root string) (*server, string, error) {
	sockDir, err := os.MkdirTemp("", "strata-suite-sock-")
	if err != nil {
		return nil, "", fmt.Errorf("creating socket directory: %w", err)
	}
	socket := filepath.Join(sockDir, "snapshotter.sock")
	line := expand(tmpl, root, socket)
	cmd := exec.Command("/bin/sh", "-c", "exec "+line)
	out := &lockedBuffer{}
	cmd.Stdout = out
	cmd.Stderr = out
	// Its own process group, so a wrapper's children can be stopped too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(sockDir)
		return nil, "", fmt.Errorf("starting snapshotter server %q: %w", line, err)
	}
	srv := &server{cmd: cmd, out: out, done: make(chan struct{}), sockDir: sockDir}
	go func() {
		srv.err = cmd.Wait()
		close(srv.done)
	}()
	return srv, socket, nil
}

// dial waits until the server's socket accepts a gRPC connection, or fails
// early when the server exits first.
func dial(srv *server, socket string) (*grpc.ClientConn, error) {
	deadline := time.Now().Add(*startFlag)
	for {
		select {
		case <-srv.done:
			return nil, fmt.Errorf("snapshotter server %q exited before serving %s: %v",
				srv.cmd.String(), socket, srv.err)
		default:
		}
		if _, err := os.Stat(socket); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Until(deadline))
			conn, err := grpc.DialContext(ctx, socket,
				grpc.WithInsecure(),
				grpc.WithBlock(),
				grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, "unix", addr)
				}))
			cancel()
			if err == nil {
				return conn, nil
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("snapshotter server socket %s never accepted a connection: %w", socket, err)
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("snapshotter server %q did not create socket %s within %v",
				srv.cmd.String(), socket, *startFlag)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM to the server's PID, then SIGKILL to its process group
// if it has not exited within the stop timeout, and removes the socket
// directory. A server that exits non-zero on SIGTERM is reported.
func (s *server) stop() error {
	defer os.RemoveAll(s.sockDir)
	pid := s.cmd.Process.Pid
	select {
	case <-s.done:
		return fmt.Errorf("snapshotter server (pid %d) died during the test: %v", pid, s.err)
	default:
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("SIGTERM to snapshotter server pid %d: %w", pid, err)
	}
	select {
	case <-s.done:
	case <-time.After(*stopFlag):
		// Negative pid: the server's own process group (Setpgid above).
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-s.done
		return fmt.Errorf("snapshotter server pid %d ignored SIGTERM for %v and was killed", pid, *stopFlag)
	}
	var exitErr *exec.ExitError
	if s.err != nil && !(errors.As(s.err, &exitErr) && exitedOnTerm(exitErr)) {
		return fmt.Errorf("snapshotter server pid %d failed on stop: %v", pid, s.err)
	}
	return nil
}

// exitedOnTerm reports whether the process was ended by the SIGTERM the
// harness sent (a server without a handler dies of the signal).
func exitedOnTerm(e *exec.ExitError) bool {
	ws, ok := e.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM
}
