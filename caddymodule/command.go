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
		Usage: "accounts|keys|ledger ...",
		Short: "Manages arcane accounts, API keys and the ledger on a running server",
		Long: `
Manages arcane's accounts, API keys and ledger through the admin API of a
running Caddy. The server holds the database file's lock, so these commands
never open it themselves.

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
  caddy arcane ledger acct_... --limit 20
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
	c := &cli{out: os.Stdout}
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

	ledger := &cobra.Command{
		Use: "ledger <account-id>", Short: "Prints an account's ledger, newest first", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			if v, _ := cmd.Flags().GetInt("limit"); v > 0 {
				q.Set("limit", strconv.Itoa(v))
			}
			if v, _ := cmd.Flags().GetUint64("before"); v > 0 {
				q.Set("before", strconv.FormatUint(v, 10))
			}
			uri := "/arcane/accounts/" + url.PathEscape(args[0]) + "/ledger"
			if len(q) > 0 {
				uri += "?" + q.Encode()
			}
			return c.do(http.MethodGet, uri, nil, c.printLedger)
		},
	}
	ledger.Flags().Int("limit", 50, "Rows per page (1-1000)")
	ledger.Flags().Uint64("before", 0, "Show rows older than this sequence number (from the previous page)")

	cmd.AddCommand(accounts, keys, ledger)
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

// parseExpiry reads an RFC 3339 time or a duration from now ("720h",
// "30d").
func parseExpiry(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err == nil && n > 0 {
			return now.Add(time.Duration(n) * 24 * time.Hour), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("--expires %q: expected an RFC 3339 time or a positive duration such as 720h or 30d", s)
	}
	return now.Add(d), nil
}

// do sends one admin API request and prints its answer.
func (c *cli) do(method, uri string, body any, print func([]byte) error) error {
	addr, err := caddycmd.DetermineAdminAPIAddress(c.address, nil, c.config, c.adapter)
	if err != nil {
		return fmt.Errorf("finding the admin API: %w", err)
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	resp, err := caddycmd.AdminAPIRequest(addr, method, uri, nil, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, uri, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading answer: %w", err)
	}
	if c.json {
		_, err := c.out.Write(data)
		return err
	}
	return print(data)
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

func (c *cli) printLedger(data []byte) error {
	var p ledgerPage
	if err := json.Unmarshal(data, &p); err != nil {
		return err
	}
	err := c.table("SEQ\tTIME\tKIND\tAMOUNT\tBALANCE\tNOTE", func(w io.Writer) {
		for _, e := range p.Data {
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.Time.Format(time.RFC3339), e.Kind, e.Amount, e.Balance, e.Note)
		}
	})
	if err == nil && p.HasMore {
		_, err = fmt.Fprintf(c.out, "more rows: --before %d\n", p.NextBefore)
	}
	return err
}
