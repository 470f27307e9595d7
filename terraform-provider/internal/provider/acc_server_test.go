package provider

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// controlPlane is a real GCL server under gunicorn, started for the acceptance tests.
type controlPlane struct {
	endpoint string
	cmd      *exec.Cmd
	apiKey   string // sent on the readiness probe: with keys configured /api/ready needs one
	logPath  string
	done     chan error
}

// venvDir is the repo virtualenv holding gunicorn and gcl_server (GCL_VENV overrides).
func venvDir() string {
	if v := os.Getenv("GCL_VENV"); v != "" {
		return v
	}
	return filepath.Join("..", "..", "..", ".venv")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, fmt.Errorf("unexpected listener address %v", l.Addr())
	}
	return addr.Port, nil
}

// startControlPlane launches gunicorn in its own process group on a free loopback port with a
// fresh SQLite database in dir, and waits (bounded) for /api/ready. apiKey, when set, is the
// server's only (admin) key.
func startControlPlane(dir, apiKey string) (*controlPlane, error) {
	gunicorn, err := filepath.Abs(filepath.Join(venvDir(), "bin", "gunicorn"))
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(gunicorn); err != nil {
		return nil, fmt.Errorf("%s not found (run `make install` at the repo root, or set GCL_VENV): %w", gunicorn, err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cp := &controlPlane{
		endpoint: fmt.Sprintf("http://127.0.0.1:%d/api", port),
		apiKey:   apiKey,
		logPath:  filepath.Join(dir, fmt.Sprintf("server-%d.log", port)),
		done:     make(chan error, 1),
	}
	logFile, err := os.Create(cp.logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()

	cp.cmd = exec.Command(gunicorn, "--workers", "2", "--bind", fmt.Sprintf("127.0.0.1:%d", port),
		"--no-control-socket", "gcl_server:create_app()")
	cp.cmd.Dir = dir
	cp.cmd.Stdout, cp.cmd.Stderr = logFile, logFile
	// Own process group so stop() reaches the workers too; Pdeathsig stops the master even when the
	// test binary dies without running its defers (a panic, a -timeout, an interrupt).
	cp.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GCL_") && !strings.HasPrefix(kv, "DATABASE_URL=") {
			env = append(env, kv)
		}
	}
	cp.cmd.Env = append(env, "DATABASE_URL=sqlite:///"+filepath.Join(dir, "gcl.db"), "GCL_LEASE_MIN_SECONDS=1")
	if apiKey != "" {
		cp.cmd.Env = append(cp.cmd.Env, "GCL_API_KEYS="+apiKey)
	}
	// Migrate first, as `make run` does: the app factory itself has no side effects.
	migrate := exec.Command(filepath.Join(filepath.Dir(gunicorn), "gcl-server"), "migrate")
	migrate.Dir, migrate.Env = dir, cp.cmd.Env
	if out, err := migrate.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("gcl-server migrate: %w\n%s", err, out)
	}
	if err := cp.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { cp.done <- cp.cmd.Wait() }()

	if err := cp.waitReady(30 * time.Second); err != nil {
		_ = cp.stop()
		return nil, fmt.Errorf("%w\n--- server log (%s) ---\n%s", err, cp.logPath, cp.logTail())
	}
	return cp, nil
}

func (cp *controlPlane) waitReady(timeout time.Duration) error {
	httpClient := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-cp.done:
			cp.done <- err
			return fmt.Errorf("control plane exited before it was ready: %v", err)
		default:
		}
		req, err := http.NewRequest(http.MethodGet, cp.endpoint+"/ready", nil)
		if err != nil {
			return err
		}
		if cp.apiKey != "" {
			req.Header.Set("Authorization", "Bearer "+cp.apiKey)
		}
		resp, err := httpClient.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("control plane at %s not ready after %v", cp.endpoint, timeout)
}

// stop terminates the whole process group (master and workers), escalating to SIGKILL, and
// returns the master's exit error (nil after a clean SIGTERM shutdown).
func (cp *controlPlane) stop() error {
	if cp == nil || cp.cmd == nil || cp.cmd.Process == nil {
		return nil
	}
	pgid := cp.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	var exitErr error
	select {
	case exitErr = <-cp.done:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		exitErr = <-cp.done
	}
	// Workers that outlived the master would still hold the group: make sure none is left.
	if err := syscall.Kill(-pgid, 0); err == nil || !errors.Is(err, syscall.ESRCH) {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	return exitErr
}

func (cp *controlPlane) logTail() string {
	data, err := os.ReadFile(cp.logPath)
	if err != nil {
		return err.Error()
	}
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

// holdSlots acquires slots with a lease the way an SDK client does, over raw HTTP.
func (cp *controlPlane) holdSlots(ctx context.Context, name string, slots int) (string, error) {
	body := fmt.Sprintf(`{"names": [%q], "slots": %d, "mode": "concurrency", "lease_duration": 300}`, name, slots)
	var out struct {
		LeaseID string `json:"lease_id"`
	}
	if err := postJSON(ctx, cp.endpoint+"/v2/concurrency_limits/increment-with-lease", body, &out); err != nil {
		return "", err
	}
	if out.LeaseID == "" {
		return "", errors.New("increment-with-lease returned no lease_id")
	}
	return out.LeaseID, nil
}

// releaseSlots ends a lease taken by holdSlots.
func (cp *controlPlane) releaseSlots(ctx context.Context, leaseID string) error {
	return postJSON(ctx, cp.endpoint+"/v2/concurrency_limits/decrement-with-lease",
		fmt.Sprintf(`{"lease_id": %q}`, leaseID), nil)
}
