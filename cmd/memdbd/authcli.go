package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
)

// The access-control commands: memdbd user ..., memdbd role ...,
// memdbd auth .... Each parses its flags wherever they appear among its
// arguments, so that `memdbd user add alice -addr host:7001` works as
// typed.

// authFlags parses args into the admin target and the positional
// arguments; extra registers a command's own flags.
func authFlags(name string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (t adminTarget, timeout time.Duration, pos []string, ok bool) {
	fs := flag.NewFlagSet("memdbd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&t.addr, "addr", "127.0.0.1:7000", "client address of the node to ask")
	fs.DurationVar(&timeout, "timeout", 10*time.Second, "deadline of the call")
	tlsFlags(fs, &t)
	if extra != nil {
		extra(fs)
	}
	for {
		if err := fs.Parse(args); err != nil {
			return t, 0, nil, false
		}
		if fs.NArg() == 0 {
			return t, timeout, pos, true
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// authCall dials, calls and reports an error as the command's.
func authCall(t adminTarget, timeout time.Duration, stderr io.Writer, name string, call func(context.Context, pb.AuthServiceClient) error) int {
	conn, err := dialAdmin(t)
	if err != nil {
		fmt.Fprintf(stderr, "memdbd %s: %v\n", name, err)
		return 1
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := call(ctx, pb.NewAuthServiceClient(conn)); err != nil {
		fmt.Fprintf(stderr, "memdbd %s: %v\n", name, err)
		return 1
	}
	return 0
}

func usage(stderr io.Writer, text string) int {
	fmt.Fprint(stderr, text)
	return 2
}

const userUsage = `usage: memdbd user <command> [flags]
  add NAME [-password-stdin | -no-password]   a new user; without a password given, one is made and printed once
  passwd NAME [-password-stdin]               a new password (made and printed when none is given)
  del NAME
  grant NAME ROLE                             give a user a role (root: everything)
  revoke NAME ROLE
  list
Every command takes -addr, the TLS flags, and -user/-password-file to call as an administrator.
`

// readPassword reads one line from stdin.
func readPassword(stdin io.Reader) (string, error) {
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func cmdUser(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return usage(stderr, userUsage)
	}
	sub, args := args[0], args[1:]
	var fromStdin, none bool
	t, timeout, pos, ok := authFlags("user "+sub, args, stderr, func(fs *flag.FlagSet) {
		if sub == "add" || sub == "passwd" {
			fs.BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of standard input")
		}
		if sub == "add" {
			fs.BoolVar(&none, "no-password", false, "a user identified by its client certificate only")
		}
	})
	if !ok {
		return 2
	}
	want := map[string]int{"add": 1, "passwd": 1, "del": 1, "grant": 2, "revoke": 2, "list": 0}
	n, known := want[sub]
	if !known || len(pos) != n {
		return usage(stderr, userUsage)
	}
	var password string
	if fromStdin {
		var err error
		if password, err = readPassword(os.Stdin); err != nil {
			fmt.Fprintln(stderr, "memdbd user:", err)
			return 1
		}
	}
	return authCall(t, timeout, stderr, "user "+sub, func(ctx context.Context, c pb.AuthServiceClient) error {
		switch sub {
		case "add":
			r, err := c.UserAdd(ctx, &pb.UserAddRequest{Name: pos[0], Password: password, NoPassword: none})
			if err == nil {
				printGenerated(stdout, "user "+pos[0]+" added", r.GeneratedPassword)
			}
			return err
		case "passwd":
			r, err := c.UserPasswd(ctx, &pb.UserPasswdRequest{Name: pos[0], Password: password})
			if err == nil {
				printGenerated(stdout, "password of "+pos[0]+" changed", r.GeneratedPassword)
			}
			return err
		case "del":
			_, err := c.UserDelete(ctx, &pb.UserDeleteRequest{Name: pos[0]})
			return done(stdout, err, "user "+pos[0]+" deleted")
		case "grant":
			_, err := c.UserGrantRole(ctx, &pb.UserGrantRoleRequest{User: pos[0], Role: pos[1]})
			return done(stdout, err, "user "+pos[0]+" has role "+pos[1])
		case "revoke":
			_, err := c.UserRevokeRole(ctx, &pb.UserRevokeRoleRequest{User: pos[0], Role: pos[1]})
			return done(stdout, err, "user "+pos[0]+" no longer has role "+pos[1])
		}
		r, err := c.UserList(ctx, &pb.UserListRequest{})
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "USER\tPASSWORD\tROLES")
		for _, u := range r.Users {
			fmt.Fprintf(tw, "%s\t%v\t%s\n", u.Name, u.HasPassword, strings.Join(u.Roles, ","))
		}
		return tw.Flush()
	})
}

func printGenerated(w io.Writer, what, generated string) {
	fmt.Fprintln(w, what)
	if generated != "" {
		fmt.Fprintf(w, "password (shown once, keep it safe): %s\n", generated)
	}
}

func done(w io.Writer, err error, msg string) error {
	if err == nil {
		fmt.Fprintln(w, msg)
	}
	return err
}

const roleUsage = `usage: memdbd role <command> [flags]
  add NAME
  del NAME
  grant ROLE ACTION [TABLE] [-prefix]    allow ACTION: read, write or schema on TABLE (with -prefix, on every
                                         table whose name starts with TABLE; -prefix alone: every table),
                                         or cluster.read, cluster.admin
  revoke ROLE ACTION [TABLE] [-prefix]
  list
Every command takes -addr, the TLS flags, and -user/-password-file to call as an administrator.
`

func cmdRole(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return usage(stderr, roleUsage)
	}
	sub, args := args[0], args[1:]
	var prefix bool
	t, timeout, pos, ok := authFlags("role "+sub, args, stderr, func(fs *flag.FlagSet) {
		if sub == "grant" || sub == "revoke" {
			fs.BoolVar(&prefix, "prefix", false, "TABLE is a prefix of table names (none: every table)")
		}
	})
	if !ok {
		return 2
	}
	var perm *pb.Permission
	switch {
	case (sub == "add" || sub == "del") && len(pos) == 1, sub == "list" && len(pos) == 0:
	case (sub == "grant" || sub == "revoke") && (len(pos) == 2 || len(pos) == 3):
		perm = &pb.Permission{Action: pos[1], Prefix: prefix}
		if len(pos) == 3 {
			perm.Table = pos[2]
		}
	default:
		return usage(stderr, roleUsage)
	}
	return authCall(t, timeout, stderr, "role "+sub, func(ctx context.Context, c pb.AuthServiceClient) error {
		switch sub {
		case "add":
			_, err := c.RoleAdd(ctx, &pb.RoleAddRequest{Name: pos[0]})
			return done(stdout, err, "role "+pos[0]+" added")
		case "del":
			_, err := c.RoleDelete(ctx, &pb.RoleDeleteRequest{Name: pos[0]})
			return done(stdout, err, "role "+pos[0]+" deleted")
		case "grant":
			_, err := c.RoleGrant(ctx, &pb.RoleGrantRequest{Role: pos[0], Permission: perm})
			return done(stdout, err, "role "+pos[0]+" may "+permString(perm))
		case "revoke":
			_, err := c.RoleRevoke(ctx, &pb.RoleRevokeRequest{Role: pos[0], Permission: perm})
			return done(stdout, err, "role "+pos[0]+" may no longer "+permString(perm))
		}
		r, err := c.RoleList(ctx, &pb.RoleListRequest{})
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ROLE\tPERMISSIONS")
		for _, r := range r.Roles {
			var ps []string
			for _, p := range r.Permissions {
				ps = append(ps, permString(p))
			}
			if r.Name == "root" {
				ps = []string{"everything"}
			}
			fmt.Fprintf(tw, "%s\t%s\n", r.Name, strings.Join(ps, ", "))
		}
		return tw.Flush()
	})
}

// permString reads like the grant that made it: "read users",
// "write app_* (prefix)", "cluster.admin".
func permString(p *pb.Permission) string {
	switch {
	case p.Prefix && p.Table == "":
		return p.Action + " every table"
	case p.Prefix:
		return p.Action + " " + p.Table + "* (prefix)"
	case p.Table == "":
		return p.Action
	}
	return p.Action + " " + p.Table
}

const authUsage = `usage: memdbd auth <command> [flags]
  enable     turn access control on (a user with the root role must exist)
  disable    turn it off: every caller may do everything
  whoami     who the member takes you for, and your roles
`

func cmdAuth(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return usage(stderr, authUsage)
	}
	sub, args := args[0], args[1:]
	t, timeout, pos, ok := authFlags("auth "+sub, args, stderr, nil)
	if !ok {
		return 2
	}
	if len(pos) != 0 || (sub != "enable" && sub != "disable" && sub != "whoami") {
		return usage(stderr, authUsage)
	}
	return authCall(t, timeout, stderr, "auth "+sub, func(ctx context.Context, c pb.AuthServiceClient) error {
		switch sub {
		case "enable":
			_, err := c.AuthEnable(ctx, &pb.AuthEnableRequest{})
			return done(stdout, err, "access control is on")
		case "disable":
			_, err := c.AuthDisable(ctx, &pb.AuthDisableRequest{})
			return done(stdout, err, "access control is off")
		}
		r, err := c.WhoAmI(ctx, &pb.WhoAmIRequest{})
		if err != nil {
			return err
		}
		user := r.User
		if user == "" {
			user = "anonymous"
		}
		fmt.Fprintf(stdout, "user: %s (by %s)\naccess control: %v\nroles: %s\n", user, r.Method, r.AuthEnabled, strings.Join(r.Roles, ","))
		return nil
	})
}
