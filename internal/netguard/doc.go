// Package netguard classifies forward destinations for postern's SSRF guard:
// the outer hop (bastion, direct-tcpip to destinations outside the
// inventory) and the inner hop (bastion/innerhop, direct-tcpip and
// tcpip-forward through an ssh target) decide with it.
//
// It owns the address spellings a resolver or inet_aton would accept
// ([ParseHost]), the special address ranges a forward may reach only when a
// role names them explicitly — loopback, "this network", link-local,
// multicast and every well-known cloud metadata endpoint, in IPv4 and IPv6
// and in every IPv6 form that carries an IPv4 address (IPv4-mapped and
// -compatible, SIIT, NAT64, 6to4, Teredo, ISATAP) — ([Classify]), the
// well-known metadata host names ([MetadataName]), and the bastion's own
// listeners with every address that reaches them ([Listeners]).
//
// It imports nothing of postern.
package netguard
