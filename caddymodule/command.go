package caddymodule

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/arcaneapi/caddy-arcane/billing"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "arcane",
		Usage: "accounts|keys|users|invites|ledger|usage|audit|request ...",
		Short: "Manages arcane accounts, API keys, dashboard users and invites, and the ledger on a running server",
		Long: `
Manages arcane's accounts, API keys, dashboard users and invites, and the
ledger through the admin API of a running Caddy. The server holds the
database file's lock, so these commands never open it themselves.

The admin endpoint is found the way 'caddy reload' finds it: --address if
given, else the admin address in --config, else the default
(localhost:2019). Output is a table for people; --json prints the admin
API's answer for scripts. Amounts are US dollars as decimal strings.

  caddy arcane accounts create "Acme Corp" --balance 25.00
  caddy arcane accounts list
  caddy arcane accounts show acct_...
  caddy arcane accounts credit acct_... 10.50 --note "invoice 42"
  caddy arcane accounts disable|enable acct_...
  caddy arcane keys create acct_... --name ci --models gpt-5.2 --rpm 60
  caddy arcane keys list acct_...
  caddy arcane keys revoke key_...
  caddy arcane users list [--account acct_...]
  caddy arcane users show user_...
  caddy arcane users disable|enable user_...
  caddy arcane invites create --note "for Ann" --expires 7d
  caddy arcane invites create --account acct_... --note "for Bob at Acme"
  caddy arcane invites list
  caddy arcane invites revoke invite_...
  caddy arcane ledger acct_... --limit 20
  caddy arcane ledger acct_... --kind charge --model gpt-5.2 --key key_... --since 24h
  caddy arcane usage --since 7d
  caddy arcane usage --account acct_... --since 2026-01-01T00:00:00Z --until 2026-02-01T00:00:00Z
  caddy arcane audit
  caddy arcane request req_...

Times (--since, inclusive; --until, exclusive) are RFC 3339 or a duration
before now such as 90m, 24h or 7d. 'audit' replays every ledger against the
stored balances and the requests index; it exits with status 1 if it finds
a difference. Disabling a dashboard user logs it out everywhere but leaves
its account's API keys working: disable the account to stop those. An
invite created with --account lets the person who signs up with it manage
that existing account, as one more of its users, instead of opening a new
one.
`,
		CobraFunc: arcaneCommand,
	})
}

// cli is one invocation's connection to the admin API and output choices.
type cli struct {
	address, config, adapter string
	json                     bool
	out                      io.Writer
}

func arcaneCommand(cmd *cobra.Command) {
	(&cli{out: os.Stdout}).register(cmd)
}

// register adds the flags and subcommands to cmd, the "arcane" command.
func (c *cli) register(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.StringVar(&c.address, "address", "", "Address of the admin API endpoint, if not the default or the one in --config")
	pf.StringVarP(&c.config, "config", "c", "", "Configuration file to read the admin address from")
	pf.StringVarP(&c.adapter, "adapter", "a", "", "Name of config adapter to apply (with --config)")
	pf.BoolVar(&c.json, "json", false, "Print the admin API's JSON answer")

	accounts := &cobra.Command{Use: "accounts", Short: "Creates, lists, shows, credits and disables accounts"}
	create := &cobra.Command{
		Use: "create <name>", Short: "Creates an account", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := map[string]any{"name": args[0]}
			if b, _ := cmd.Flags().GetString("balance"); b != "" {
				body["balance"] = b
			}
			return c.do(http.MethodPost, "/arcane/accounts", body, c.printAccount)
		},
	}
	create.Flags().String("balance", "", "Opening balance in USD, e.g. 25.00")
	credit := &cobra.Command{
		Use: "credit <account-id> <amount>", Short: "Adds money to an account's balance", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			note, _ := cmd.Flags().GetString("note")
			return c.do(http.MethodPost, "/arcane/accounts/"+url.PathEscape(args[0])+"/credit",
				map[string]any{"amount": args[1], "note": note}, c.printAccount)
		},
	}
	credit.Flags().String("note", "", "A note for the ledger row")
	accounts.AddCommand(create, credit,
		&cobra.Command{
			Use: "list", Short: "Lists accounts", Args: cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error {
				return c.do(http.MethodGet, "/arcane/accounts", nil, c.printAccounts)
			},
		},
		&cobra.Command{
			Use: "show <account-id>", Short: "Shows one account", Args: cobra.ExactArgs(1),
			RunE: func(_ *cobra.Command, args []string) error {
				return c.do(http.MethodGet, "/arcane/accounts/"+url.PathEscape(args[0]), nil, c.printAccount)
			},
		},
		c.stateCommand("disable", billing.AccountDisabled, "Disables an account: its keys stop working at once"),
		c.stateCommand("enable", billing.AccountActive, "Enables a disabled account"),
	)

	keys := &cobra.Command{Use: "keys", Short: "Creates, lists and revokes API keys"}
	keyCreate := &cobra.Command{
		Use: "create <account-id>", Short: "Creates an API key; its secret is shown once", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			body := map[string]any{}
			if v, _ := f.GetString("name"); v != "" {
				body["name"] = v
			}
			if v, _ := f.GetStringSlice("models"); len(v) > 0 {
				body["models"] = v
			}
			if v, _ := f.GetInt64("rpm"); v != 0 {
				body["rpm"] = v
			}
			if v, _ := f.GetInt64("tpm"); v != 0 {
				body["tpm"] = v
			}
			if v, _ := f.GetString("expires"); v != "" {
				t, err := parseExpiry(v, time.Now())
				if err != nil {
					return err
				}
				body["expires_at"] = t
			}
			return c.do(http.MethodPost, "/arcane/accounts/"+url.PathEscape(args[0])+"/keys", body, c.printNewKey)
		},
	}
	kf := keyCreate.Flags()
	kf.String("name", "", "A name to tell the key apart")
	kf.StringSlice("models", nil, "Comma-separated public model IDs the key may call (default: all)")
	kf.Int64("rpm", 0, "Requests per minute for this key, overriding the configured default")
	kf.Int64("tpm", 0, "Tokens per minute for this key, overriding the configured default")
	kf.String("expires", "", "When the key stops working: an RFC 3339 time or a duration such as 720h or 30d")
	keys.AddCommand(keyCreate,
		&cobra.Command{
			Use: "list <account-id>", Short: "Lists an account's keys (never their secrets)", Args: cobra.ExactArgs(1),
			RunE: func(_ *cobra.Command, args []string) error {
				return c.do(http.MethodGet, "/arcane/accounts/"+url.PathEscape(args[0])+"/keys", nil, c.printKeys)
			},
		},
		&cobra.Command{
			Use: "revoke <key-id>", Short: "Revokes a key, effective on the next request", Args: cobra.ExactArgs(1),
			RunE: func(_ *cobra.Command, args []string) error {
				return c.do(http.MethodDelete, "/arcane/keys/"+url.PathEscape(args[0]), nil, c.printKey)
			},
		},
	)

	users := &cobra.Command{Use: "users", Short: "Lists, shows, disables and enables dashboard users"}
	userList := &cobra.Command{
		Use: "list", Short: "Lists dashboard users", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if v, _ := cmd.Flags().GetString("account"); v != "" {
				q.Set("account_id", v)
			}
			return c.do(http.MethodGet, withQuery("/arcane/users", q), nil, c.printUsers)
		},
	}
	userList.Flags().String("account", "", "Only this account's users (default: every user)")
	users.AddCommand(userList,
		&cobra.Command{
			Use: "show <user-id>", Short: "Shows one dashboard user", Args: cobra.ExactArgs(1),
			RunE: func(_ *cobra.Command, args []string) error {
				return c.do(http.MethodGet, "/arcane/users/"+url.PathEscape(args[0]), nil, c.printUser)
			},
		},
		c.userStateCommand("disable", billing.UserDisabled,
			"Disables a dashboard user and logs it out everywhere; its account's API keys keep working (use 'accounts disable' for those)"),
		c.userStateCommand("enable", billing.UserActive, "Enables a disabled dashboard user"),
	)

	invites := &cobra.Command{Use: "invites", Short: "Creates, lists and revokes invite codes for signing up to the dashboard"}
	inviteCreate := &cobra.Command{
		Use: "create", Short: "Creates a one-use sign-up code; it is shown once", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			body := map[string]any{}
			if v, _ := f.GetString("note"); v != "" {
				body["note"] = v
			}
			if v, _ := f.GetString("account"); v != "" {
				body["account_id"] = v
			}
			if v, _ := f.GetString("expires"); v != "" {
				t, err := parseExpiry(v, time.Now())
				if err != nil {
					return err
				}
				body["expires_at"] = t
			}
			return c.do(http.MethodPost, "/arcane/invites", body, c.printNewInvite)
		},
	}
	inf := inviteCreate.Flags()
	inf.String("note", "", "A note for yourself: who the invite is for")
	inf.String("account", "", "An existing account the person who signs up will manage (default: a new account of their own)")
	inf.String("expires", "", "When the code stops working: an RFC 3339 time or a duration such as 72h or 7d (default: never)")
	invites.AddCommand(inviteCreate,
		&cobra.Command{
			Use: "list", Short: "Lists invites and whether each is unused, used, revoked or expired (never their codes)", Args: cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error {
				return c.do(http.MethodGet, "/arcane/invites", nil, c.printInvites)
			},
		},
		&cobra.Command{
			Use: "revoke <invite-id>", Short: "Revokes an unused invite: its code stops working", Args: cobra.ExactArgs(1),
			RunE: func(_ *cobra.Command, args []string) error {
				return c.do(http.MethodDelete, "/arcane/invites/"+url.PathEscape(args[0]), nil, c.printInvite)
			},
		},
	)

	ledger := &cobra.Command{
		Use: "ledger <account-id>", Short: "Prints an account's ledger, newest first", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			q := url.Values{}
			if v, _ := f.GetInt("limit"); v > 0 {
				q.Set("limit", strconv.Itoa(v))
			}
			if v, _ := f.GetUint64("before"); v > 0 {
				q.Set("before", strconv.FormatUint(v, 10))
			}
			setFlags(q, cmd, "key", "model", "kind", "since", "until")
			return c.do(http.MethodGet, withQuery("/arcane/accounts/"+url.PathEscape(args[0])+"/ledger", q), nil, c.printLedger)
		},
	}
	lf := ledger.Flags()
	lf.Int("limit", 50, "Rows per page (1-1000)")
	lf.Uint64("before", 0, "Show rows older than this sequence number (from the previous page)")
	lf.String("key", "", "Only charges made with this key id")
	lf.String("model", "", "Only charges for this public model ID")
	lf.String("kind", "", "Only rows of this kind: credit or charge")
	lf.String("since", "", "Only rows at or after this time: RFC 3339 or a duration before now such as 24h or 7d")
	lf.String("until", "", "Only rows before this time: RFC 3339 or a duration before now")

	usage := &cobra.Command{
		Use: "usage", Short: "Sums charges per account and model: requests, tokens and cost", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			setFlags(q, cmd, "account", "since", "until")
			return c.do(http.MethodGet, withQuery("/arcane/usage", q), nil, c.printUsage)
		},
	}
	uf := usage.Flags()
	uf.String("account", "", "Only this account (default: every account)")
	uf.String("since", "", "Only charges at or after this time: RFC 3339 or a duration before now such as 24h or 7d (default: from the first)")
	uf.String("until", "", "Only charges before this time: RFC 3339 or a duration before now (default: up to now)")

	audit := &cobra.Command{
		Use: "audit", Short: "Replays every ledger against the balances and the requests index; exits 1 on a difference", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			data, err := c.fetch(http.MethodGet, "/arcane/audit", nil)
			if err != nil {
				return err
			}
			var r billing.AuditReport
			if err := json.Unmarshal(data, &r); err != nil {
				return fmt.Errorf("decoding the audit report: %w", err)
			}
			if c.json {
				_, err = c.out.Write(data)
			} else {
				err = c.printAudit(r)
			}
			if err != nil {
				return err
			}
			if !r.OK {
				return fmt.Errorf("the store is inconsistent: %d differences", len(r.Differences))
			}
			return nil
		},
	}

	request := &cobra.Command{
		Use: "request <request-id>", Short: "Prints the ledger row that settled a request", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return c.do(http.MethodGet, "/arcane/requests/"+url.PathEscape(args[0]), nil, c.printEntry)
		},
	}

	upstreams := &cobra.Command{
		Use: "upstreams", Short: "Shows each model's deployments: circuit state, requests in flight, latency, recent failures", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return c.do(http.MethodGet, "/arcane/upstreams", nil, c.printUpstreams)
		},
	}

	cmd.AddCommand(accounts, keys, users, invites, ledger, usage, audit, request, upstreams)
}

// setFlags copies cmd's named string flags that are set into q.
func setFlags(q url.Values, cmd *cobra.Command, names ...string) {
	for _, name := range names {
		if v, _ := cmd.Flags().GetString(name); v != "" {
			q.Set(name, v)
		}
	}
}

func withQuery(path string, q url.Values) string {
	if len(q) == 0 {
		return path
	}
	return path + "?" + q.Encode()
}

func (c *cli) stateCommand(verb string, state billing.AccountState, short string) *cobra.Command {
	return &cobra.Command{
		Use: verb + " <account-id>", Short: short, Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return c.do(http.MethodPatch, "/arcane/accounts/"+url.PathEscape(args[0]),
				map[string]any{"state": state}, c.printAccount)
		},
	}
}

func (c *cli) userStateCommand(verb string, state billing.UserState, short string) *cobra.Command {
	return &cobra.Command{
		Use: verb + " <user-id>", Short: short, Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return c.do(http.MethodPatch, "/arcane/users/"+url.PathEscape(args[0]),
				map[string]any{"state": state}, c.printUser)
		},
	}
}

// parseExpiry reads an RFC 3339 time or a duration from now ("720h",
// "30d").
func parseExpiry(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, ok := parseDuration(s)
	if !ok {
		return time.Time{}, fmt.Errorf("--expires %q: expected an RFC 3339 time or a positive duration such as 720h or 30d", s)
	}
	return now.Add(d), nil
}

// do sends one admin API request and prints its answer: as it is with
// --json, else through print.
func (c *cli) do(method, uri string, body any, print func([]byte) error) error {
	data, err := c.fetch(method, uri, body)
	if err != nil {
		return err
	}
	if c.json {
		_, err := c.out.Write(data)
		return err
	}
	return print(data)
}

// fetch sends one admin API request and returns its answer; an error
// status is an error.
func (c *cli) fetch(method, uri string, body any) ([]byte, error) {
	addr, err := caddycmd.DetermineAdminAPIAddress(c.address, nil, c.config, c.adapter)
	if err != nil {
		return nil, fmt.Errorf("finding the admin API: %w", err)
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	resp, err := caddycmd.AdminAPIRequest(addr, method, uri, nil, rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, uri, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading answer: %w", err)
	}
	return data, nil
}

func (c *cli) table(header string, rows func(w io.Writer)) error {
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	rows(tw)
	return tw.Flush()
}

func (c *cli) printAccount(data []byte) error {
	var a accountView
	if err := json.Unmarshal(data, &a); err != nil {
		return err
	}
	return c.accountRows([]accountView{a})
}

func (c *cli) printAccounts(data []byte) error {
	var l list[accountView]
	if err := json.Unmarshal(data, &l); err != nil {
		return err
	}
	return c.accountRows(l.Data)
}

func (c *cli) accountRows(accts []accountView) error {
	return c.table("ID\tNAME\tBALANCE\tHELD\tSTATE\tCREATED", func(w io.Writer) {
		for _, a := range accts {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.Name, a.Balance, a.Held, a.State, a.CreatedAt.Format(time.RFC3339))
		}
	})
}

func (c *cli) printNewKey(data []byte) error {
	var k keyView
	if err := json.Unmarshal(data, &k); err != nil {
		return err
	}
	if err := c.keyRows([]keyView{k}); err != nil {
		return err
	}
	_, err := fmt.Fprintf(c.out, "\nkey: %s\nThis is the only time the key is shown: store it now.\n", k.Secret)
	return err
}

func (c *cli) printKey(data []byte) error {
	var k keyView
	if err := json.Unmarshal(data, &k); err != nil {
		return err
	}
	return c.keyRows([]keyView{k})
}

func (c *cli) printKeys(data []byte) error {
	var l list[keyView]
	if err := json.Unmarshal(data, &l); err != nil {
		return err
	}
	return c.keyRows(l.Data)
}

func (c *cli) keyRows(keys []keyView) error {
	return c.table("ID\tNAME\tLAST4\tSTATE\tMODELS\tRPM\tTPM\tEXPIRES\tCREATED", func(w io.Writer) {
		for _, k := range keys {
			models, expires := "all", "never"
			if len(k.Models) > 0 {
				models = strings.Join(k.Models, ",")
			}
			if k.ExpiresAt != nil {
				expires = k.ExpiresAt.Format(time.RFC3339)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, k.Last4, k.State, models,
				limitText(k.RPM), limitText(k.TPM), expires, k.CreatedAt.Format(time.RFC3339))
		}
	})
}

func limitText(n int64) string {
	if n == 0 {
		return "default"
	}
	return strconv.FormatInt(n, 10)
}

func (c *cli) printUser(data []byte) error {
	var u billing.User
	if err := json.Unmarshal(data, &u); err != nil {
		return err
	}
	return c.userRows([]billing.User{u})
}

func (c *cli) printUsers(data []byte) error {
	var l list[billing.User]
	if err := json.Unmarshal(data, &l); err != nil {
		return err
	}
	return c.userRows(l.Data)
}

func (c *cli) userRows(users []billing.User) error {
	return c.table("ID\tEMAIL\tACCOUNT\tSTATE\tCREATED\tLAST LOGIN", func(w io.Writer) {
		for _, u := range users {
			last := "never"
			if u.LastLoginAt != nil {
				last = u.LastLoginAt.Format(time.RFC3339)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", u.ID, u.Email, u.AccountID, u.State, u.CreatedAt.Format(time.RFC3339), last)
		}
	})
}

func (c *cli) printNewInvite(data []byte) error {
	var inv inviteView
	if err := json.Unmarshal(data, &inv); err != nil {
		return err
	}
	if err := c.inviteRows([]inviteView{inv}); err != nil {
		return err
	}
	_, err := fmt.Fprintf(c.out, "\ncode: %s\nThis is the only time the code is shown: give it to the person who will sign up.\n", inv.Code)
	return err
}

func (c *cli) printInvite(data []byte) error {
	var inv inviteView
	if err := json.Unmarshal(data, &inv); err != nil {
		return err
	}
	return c.inviteRows([]inviteView{inv})
}

func (c *cli) printInvites(data []byte) error {
	var l list[inviteView]
	if err := json.Unmarshal(data, &l); err != nil {
		return err
	}
	return c.inviteRows(l.Data)
}

func (c *cli) inviteRows(invites []inviteView) error {
	return c.table("ID\tSTATE\tACCOUNT\tNOTE\tCREATED\tEXPIRES\tUSED BY", func(w io.Writer) {
		for _, inv := range invites {
			account, expires := "new", "never"
			if inv.AccountID != "" {
				account = inv.AccountID
			}
			if inv.ExpiresAt != nil {
				expires = inv.ExpiresAt.Format(time.RFC3339)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", inv.ID, inv.State, account, inv.Note,
				inv.CreatedAt.Format(time.RFC3339), expires, inv.UsedBy)
		}
	})
}

func (c *cli) printLedger(data []byte) error {
	var p ledgerPage
	if err := json.Unmarshal(data, &p); err != nil {
		return err
	}
	err := c.entryRows(p.Data)
	if err == nil && p.HasMore {
		_, err = fmt.Fprintf(c.out, "more rows: --before %d\n", p.NextBefore)
	}
	return err
}

// printEntry prints one ledger row, a field a line.
func (c *cli) printEntry(data []byte) error {
	var e billing.Entry
	if err := json.Unmarshal(data, &e); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	for _, f := range [][2]string{
		{"request", e.RequestID}, {"account", e.AccountID}, {"seq", strconv.FormatUint(e.Seq, 10)},
		{"time", e.Time.Format(time.RFC3339Nano)}, {"kind", string(e.Kind)}, {"amount", e.Amount.String()},
		{"balance", e.Balance.String()}, {"model", e.Model}, {"deployment", e.Deployment}, {"key", e.KeyID},
		{"tokens", tokensText(&e)}, {"basis", e.Basis}, {"outcome", e.Outcome}, {"attempts", attemptsText(e.Attempts)}, {"note", e.Note},
	} {
		if f[1] != "" {
			fmt.Fprintf(tw, "%s\t%s\n", f[0], f[1])
		}
	}
	return tw.Flush()
}

func (c *cli) entryRows(rows []billing.Entry) error {
	return c.table("SEQ\tTIME\tKIND\tAMOUNT\tBALANCE\tMODEL\tKEY\tTOKENS\tREQUEST\tNOTE", func(w io.Writer) {
		for _, e := range rows {
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.Time.Format(time.RFC3339), e.Kind,
				e.Amount, e.Balance, e.Model, e.KeyID, tokensText(&e), e.RequestID, e.Note)
		}
	})
}

func attemptsText(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}

// tokensText says what a charge used: "1200 in (200 cached), 30 out", or
// "1200 in (200 cached, 900 written), 30 out" with cache writes.
func tokensText(e *billing.Entry) string {
	switch {
	case e.Kind != billing.EntryCharge:
		return ""
	case e.CacheWriteTokens > 0:
		return fmt.Sprintf("%d in (%d cached, %d written), %d out", e.PromptTokens, e.CachedTokens, e.CacheWriteTokens, e.CompletionTokens)
	case e.CachedTokens > 0:
		return fmt.Sprintf("%d in (%d cached), %d out", e.PromptTokens, e.CachedTokens, e.CompletionTokens)
	}
	return fmt.Sprintf("%d in, %d out", e.PromptTokens, e.CompletionTokens)
}

func (c *cli) printUsage(data []byte) error {
	var u usageReport
	if err := json.Unmarshal(data, &u); err != nil {
		return err
	}
	var total billing.UsageRow
	return c.table("ACCOUNT\tMODEL\tREQUESTS\tPROMPT\tCACHED\tCACHE_WRITE\tCOMPLETION\tCOST", func(w io.Writer) {
		for _, r := range u.Data {
			fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n", r.AccountID, r.Model, r.Requests, r.PromptTokens, r.CachedTokens, r.CacheWriteTokens, r.CompletionTokens, r.Cost)
			total.Requests += r.Requests
			total.PromptTokens += r.PromptTokens
			total.CachedTokens += r.CachedTokens
			total.CacheWriteTokens += r.CacheWriteTokens
			total.CompletionTokens += r.CompletionTokens
			total.Cost += r.Cost
		}
		fmt.Fprintf(w, "TOTAL\t\t%d\t%d\t%d\t%d\t%d\t%s\n", total.Requests, total.PromptTokens, total.CachedTokens, total.CacheWriteTokens, total.CompletionTokens, total.Cost)
	})
}

func (c *cli) printAudit(r billing.AuditReport) error {
	if r.OK {
		_, err := fmt.Fprintf(c.out, "consistent: %d accounts, %d rows, %d charges\n", r.Accounts, r.Rows, r.Charges)
		return err
	}
	if _, err := fmt.Fprintf(c.out, "INCONSISTENT: %d differences in %d accounts, %d rows, %d charges\n",
		len(r.Differences), r.Accounts, r.Rows, r.Charges); err != nil {
		return err
	}
	for _, d := range r.Differences {
		if _, err := fmt.Fprintln(c.out, d); err != nil {
			return err
		}
	}
	return nil
}
