package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ai-guardian/adaptivethrottle/admission"
)

// proc is a child process the lab started; stop ends it and only it.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	log  string
}

// startProc runs bin with args, output to logDir/name.log. The child gets
// its own process group so a terminal's Ctrl-C reaches the lab only, which
// then stops its children itself.
func startProc(name, logDir, bin string, args, env []string) (*proc, error) {
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// startCaddy runs Caddy (bin with args, pinned or not) in dir, with XDG
// folders of its own and the admission rules rulesOff turned off, and
// waits for its admin API at admin (http://host:port) and, for a set-up
// that runs the module, for its /throttle/status, which it returns (""
// otherwise). On an error it has stopped Caddy.
func startCaddy(ctx context.Context, dir, bin string, args []string, rulesOff, admin string, module bool) (cad *proc, status string, err error) {
	xdg := filepath.Join(dir, "xdg")
	cad, err = startProc("caddy", dir, bin, args,
		[]string{"XDG_DATA_HOME=" + xdg, "XDG_CONFIG_HOME=" + xdg, admission.RulesOffEnv + "=" + rulesOff})
	if err != nil {
		return nil, "", err
	}
	if err := waitReady(ctx, admin+"/config/", cad, 20*time.Second); err != nil {
		cad.stop(5 * time.Second)
		return nil, "", err
	}
	if module {
		status = admin + "/throttle/status"
		if err := waitReady(ctx, status, cad, 10*time.Second); err != nil {
			cad.stop(5 * time.Second)
			return nil, "", errors.Join(err, errors.New("is ./caddy built with adaptive_throttle?"))
		}
	}
	return cad, status, nil
}

// exited reports whether the process has ended (and how).
func (p *proc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM, then SIGKILL after grace, to this process only.
func (p *proc) stop(grace time.Duration) {
	if ended, _ := p.exited(); ended {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// kill ends the process at once (SIGKILL), as a crash would.
func (p *proc) kill() {
	if ended, _ := p.exited(); ended {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// wait waits for the process to end or ctx to be done.
func (p *proc) wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		p.stop(2 * time.Second)
		return ctx.Err()
	}
}

// freePort asks the kernel for a free port on 127.0.0.1 and never hands
// out the same port twice in this process: the scenarios start their
// set-ups at the same time, and a port closed here could otherwise come
// back from the next call before the child that was given it binds it.
// Another process could still take it first; a child that then fails to
// bind says so (errPortTaken) and its set-up is started again.
func freePort() (int, error) {
	ports.Lock()
	defer ports.Unlock()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if !ports.handed[port] {
			ports.handed[port] = true
			return port, nil
		}
	}
	return 0, errors.New("no port on 127.0.0.1 that was not handed out already")
}

var ports = struct {
	sync.Mutex
	handed map[int]bool
}{handed: map[int]bool{}}

// errPortTaken: a child could not listen on the port it was given.
var errPortTaken = errors.New("port taken by another process")

func hostPort(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// waitReady polls url until it answers 200, the process exits, or timeout.
func waitReady(ctx context.Context, url string, p *proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	var last error
	for time.Now().Before(deadline) {
		if p != nil {
			if ended, err := p.exited(); ended {
				return p.exitError(err)
			}
		}
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready after %v: %v", url, timeout, last)
}

// exitError says that p ended before it was ready, with the end of its log
// (the log is in a temporary folder a CI run does not keep), and wraps
// errPortTaken when it could not listen.
func (p *proc) exitError(err error) error {
	tail := ""
	if b, rerr := os.ReadFile(p.log); rerr == nil {
		tail = lastLines(string(b), 5, 2000)
	}
	e := fmt.Errorf("%s exited before it was ready (%v); see %s; its log ends:\n%s", p.name, err, p.log, tail)
	if strings.Contains(tail, "address already in use") {
		return errors.Join(errPortTaken, e)
	}
	return e
}

// lastLines is the last n lines of s, at most most bytes of them.
func lastLines(s string, n, most int) string {
	s = strings.TrimRight(s, "\n")
	i := len(s)
	for ; n > 0 && i > 0; n-- {
		i = strings.LastIndexByte(s[:i], '\n')
		if i < 0 {
			i = 0
		}
	}
	s = strings.TrimLeft(s[i:], "\n")
	if len(s) > most {
		s = s[len(s)-most:]
	}
	return s
}

// inReverse returns a func that calls the funcs in *fs, the last added
// first, as they are when it is called.
func inReverse(fs *[]func()) func() {
	return func() {
		for i := len(*fs) - 1; i >= 0; i-- {
			(*fs)[i]()
		}
	}
}
