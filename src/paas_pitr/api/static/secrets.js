"use strict";
// Connection strings carry the database password. The dashboard shows them masked; the
// clear text is revealed on demand, or copied without being shown at all.
const PASSWORD_MASK = "••••••••";

// The connection string with every password in it replaced by PASSWORD_MASK: the userinfo
// password of a URI (postgresql://user:password@host/db), and any password=... parameter
// (URI query or libpq keyword/value form). When in doubt it hides more, never less.
function maskConnection(text) {
  if (typeof text !== "string") return "";
  let masked = text;
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(masked);
  if (scheme) {
    const rest = masked.slice(scheme[0].length);
    // Up to the last '@' (a raw '@' or '/' in a password must not expose its tail).
    const at = rest.lastIndexOf("@");
    const colon = at > 0 ? rest.slice(0, at).indexOf(":") : -1;
    if (colon >= 0) {
      masked = scheme[0] + rest.slice(0, colon + 1) + PASSWORD_MASK + rest.slice(at);
    }
  }
  return masked.replace(
    /(^|[?&;\s])(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^&;\s]*)/gi,
    (_, before, key) => `${before}${key}${PASSWORD_MASK}`,
  );
}

if (typeof module !== "undefined") module.exports = { maskConnection, PASSWORD_MASK };
