package dataplane

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// NetnsEnv is set in a process re-executed inside its own network namespace.
const NetnsEnv = "HORIZON_MESH_NETNS"

// InNetns reports whether this process runs in the namespace made by Reexec.
func InNetns() bool { return os.Getenv(NetnsEnv) == "1" }

// ReexecCommand returns a command running args[0] (with args[1:]) in a new network
// namespace of its own (unshare -n), with NetnsEnv and env set. grpc-go reads its
// experimental switches at start, so they must be in env.
func ReexecCommand(args []string, env ...string) (*exec.Cmd, error) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return nil, fmt.Errorf("unshare not found (util-linux): %w", err)
	}
	flags := []string{"--net"}
	if os.Geteuid() != 0 {
		flags = append(flags, "--map-root-user") // an unprivileged user namespace
	}
	cmd := exec.Command(unshare, append(append(flags, "--"), args...)...)
	cmd.Env = append(append(os.Environ(), NetnsEnv+"=1"), env...)
	return cmd, nil
}

// SetupNetns brings loopback up and adds addrs (pod and gateway IPs) to it. Only
// inside the namespace made by ReexecCommand.
func SetupNetns(addrs ...string) error {
	if !InNetns() {
		return fmt.Errorf("not in a private network namespace")
	}
	run := func(args ...string) error {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := run("link", "set", "lo", "up"); err != nil {
		return err
	}
	for _, a := range addrs {
		if err := run("addr", "add", a+"/32", "dev", "lo"); err != nil {
			return err
		}
	}
	return nil
}
