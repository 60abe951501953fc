package client_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/memdbd/memdbd/client"
)

func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	_, err = c.CreateTable(ctx, client.TableSchema{
		Name:       "users",
		PrimaryKey: "id",
		Fields: []client.FieldSchema{
			{Name: "id", Type: client.TypeString},
			{Name: "email", Type: client.TypeString},
			{Name: "age", Type: client.TypeInt},
		},
		Indexes: []client.IndexSchema{{Name: "by_email", Fields: []string{"email"}, Unique: true}},
	})
	if err != nil {
		panic(err)
	}
	meta, err := c.Insert(ctx, "users", client.Fields{"id": client.String("u1"), "email": client.String("ada@example.com"), "age": client.Int(36)})
	if err != nil {
		panic(err)
	}
	fmt.Println("version after insert:", meta.Version)

	_, err = c.Insert(ctx, "users", client.Fields{"id": client.String("u2"), "email": client.String("ada@example.com")})
	fmt.Println("duplicate email refused:", errors.Is(err, client.ErrUniqueViolation))

	row, err := c.Get(ctx, "users", client.String("u1"))
	if err != nil {
		panic(err)
	}
	fmt.Println("email:", row.Fields["email"].AsString(), "age:", row.Fields["age"].AsInt())

	_, err = c.Get(ctx, "users", client.String("nobody"))
	fmt.Println("missing row:", errors.Is(err, client.ErrNotFound))
	// Output:
	// version after insert: 1
	// duplicate email refused: true
	// email: ada@example.com age: 36
	// missing row: true
}

func ExampleClient_Txn() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	_, err = c.CreateTable(ctx, client.TableSchema{Name: "accounts", PrimaryKey: "id",
		Fields: []client.FieldSchema{{Name: "id", Type: client.TypeString}, {Name: "balance", Type: client.TypeInt}}})
	if err != nil {
		panic(err)
	}
	for _, id := range []string{"alice", "bob"} {
		if _, err := c.Upsert(ctx, "accounts", client.Fields{"id": client.String(id), "balance": client.Int(100)}); err != nil {
			panic(err)
		}
	}
	// Move 30 from alice to bob, only if alice still has 100.
	res, err := c.Txn().
		If(client.FieldIs("accounts", client.String("alice"), "balance", client.GreaterEqual, client.Int(30))).
		Then(
			client.UpdateOp("accounts", client.String("alice"), client.Fields{"balance": client.Int(70)}, nil),
			client.UpdateOp("accounts", client.String("bob"), client.Fields{"balance": client.Int(130)}, nil),
		).
		Else(client.GetOp("accounts", client.String("alice"))).
		Commit(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("transferred:", res.Succeeded, "bob's version:", res.Results[1].Meta.Version)
	// Output:
	// transferred: true bob's version: 2
}

func ExampleClient_ScanAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	_, err = c.CreateTable(ctx, client.TableSchema{Name: "events", PrimaryKey: "seq",
		Fields:  []client.FieldSchema{{Name: "seq", Type: client.TypeInt}, {Name: "kind", Type: client.TypeString}},
		Indexes: []client.IndexSchema{{Name: "by_kind", Fields: []string{"kind"}}}})
	if err != nil {
		panic(err)
	}
	for i := int64(1); i <= 5; i++ {
		kind := "click"
		if i%2 == 0 {
			kind = "view"
		}
		if _, err := c.Insert(ctx, "events", client.Fields{"seq": client.Int(i), "kind": client.String(kind)}); err != nil {
			panic(err)
		}
	}
	// Every "click", newest first, two per page.
	for row, err := range c.ScanAll(ctx, "events", client.ScanOptions{Index: "by_kind", Prefix: []client.Value{client.String("click")}, Reverse: true, Limit: 2}) {
		if err != nil {
			panic(err)
		}
		fmt.Print(row.Fields["seq"].AsInt(), " ")
	}
	fmt.Println()
	// Output:
	// 5 3 1
}

// A session store: rows that expire unless each request refreshes them,
// and a watch that follows logins, refreshes, logouts and expiries live.
func Example_sessionStore() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	_, err = c.CreateTable(ctx, client.TableSchema{Name: "web_sessions", PrimaryKey: "id",
		Fields:  []client.FieldSchema{{Name: "id", Type: client.TypeString}, {Name: "user", Type: client.TypeString, Required: true}},
		Indexes: []client.IndexSchema{{Name: "by_user", Fields: []string{"user"}}}})
	if err != nil {
		panic(err)
	}
	// The dashboard: the live sessions, then every change.
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	feed := c.Watch(wctx, "web_sessions", client.WatchOptions{Snapshot: true})
	if r := <-feed; !r.Reset {
		panic(r.Err)
	}

	const ttl = 800 * time.Millisecond
	login := func(sid, user string) {
		if _, err := c.Insert(ctx, "web_sessions", client.Fields{"id": client.String(sid), "user": client.String(user)}, client.WithTTL(ttl)); err != nil {
			panic(err)
		}
	}
	login("s-ada", "ada")
	login("s-bob", "bob")
	// Ada keeps making requests; each one refreshes her session. Bob left.
	for range 4 {
		time.Sleep(ttl / 3)
		if _, err := c.Touch(ctx, "web_sessions", client.String("s-ada"), ttl); err != nil {
			panic(err)
		}
	}
	_, err = c.Get(ctx, "web_sessions", client.String("s-bob"))
	fmt.Println("bob's session expired:", errors.Is(err, client.ErrNotFound))
	_, err = c.Get(ctx, "web_sessions", client.String("s-ada"))
	fmt.Println("ada's session alive:", err == nil)

	for r := range feed {
		done := false
		for _, e := range r.Events {
			if e.Type == client.EventDelete {
				fmt.Println("gone:", e.Row.Fields["id"].AsString(), "expired:", e.Expired)
				done = true
			}
		}
		if done {
			break
		}
	}
	// Output:
	// bob's session expired: true
	// ada's session alive: true
	// gone: s-bob expired: true
}
