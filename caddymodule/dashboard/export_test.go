package dashboard

// UsagePage is how many ledger rows a usage page shows, for the handler
// tests in package dashboard_test.
const UsagePage = usagePage
