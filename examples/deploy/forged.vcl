vcl 4.1;

# Varnish in front of forged (in front of nginx, or of forged itself).
# forged marks what a shared cache may keep: anonymous pages of public
# repositories are "public, no-cache" with an ETag (revalidated with a
# cheap 304 on every hit) or "public, max-age=31536000, immutable" when
# the URL names a commit; static files are immutable; everything signed
# in or private is "private" and anonymous responses never set cookies.
# This VCL caches exactly that, passes git traffic and forms, and keys
# nothing on cookies other than forged's session.

import std;

backend forged {
    .host = "127.0.0.1";            # CHANGE: where forged (or nginx) listens
    .port = "8080";
}

# Who may purge: forged's addresses (its -purge names this Varnish).
acl purgers {
    "127.0.0.1";                    # CHANGE: forged's addresses
}

sub vcl_recv {
    # Git smart HTTP and dumb files: streamed, never cached here.
    if (req.url ~ "^/[^/]+/[^/]+/(info/refs|git-upload-pack|git-receive-pack)" ||
        req.url ~ "^/[^/]+/[^/]+\.git/") {
        return (pipe);
    }
    # forged's purge of a repository (made private, deleted, renamed,
    # commits force-pushed away): ban every object with its key.
    if (req.method == "PURGE") {
        if (!client.ip ~ purgers) {
            return (synth(405, "Not allowed"));
        }
        if (req.http.Surrogate-Key !~ "^repo-[0-9]+$") {
            return (synth(400, "A PURGE names a repository: Surrogate-Key: repo-ID"));
        }
        if (std.ban("obj.http.Surrogate-Key == " + req.http.Surrogate-Key)) {
            return (synth(200, "Purged"));
        }
        return (synth(500, std.ban_error()));
    }
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    # Metrics are for the scraper, which asks forged directly.
    if (req.url ~ "^/metrics") {
        return (synth(404, "Not Found"));
    }
    # Administration, settings and health answers are never shared.
    if (req.url ~ "^/(admin|settings|login|new|healthz|readyz|metrics)") {
        return (pass);
    }
    # Only forged's session cookie matters; drop the rest (analytics).
    if (req.http.Cookie) {
        set req.http.Cookie = regsuball(req.http.Cookie, "(^|;\s*)(?!forged_session=)[^;=]+=[^;]*", "");
        set req.http.Cookie = regsub(req.http.Cookie, "^;\s*", "");
        if (req.http.Cookie == "") {
            unset req.http.Cookie;
        }
    }
    # Signed in: the page is personal.
    if (req.http.Cookie) {
        return (pass);
    }
    return (hash);
}

sub vcl_pipe {
    set bereq.http.Connection = "close";
}

sub vcl_backend_response {
    # Trust forged's Cache-Control; keep revalidatable pages a while so
    # that hits can be answered by a conditional request to forged.
    if (beresp.http.Cache-Control ~ "private" || beresp.http.Set-Cookie) {
        set beresp.uncacheable = true;
        set beresp.ttl = 120s;
        return (deliver);
    }
    if (beresp.http.Cache-Control ~ "no-cache" && beresp.http.ETag) {
        # Serve only after revalidation: kept for conditional fetches
        # ("keep"), fresh for a millisecond (a zero ttl is never looked up).
        set beresp.ttl = 0.001s;
        set beresp.grace = 0s;
        set beresp.keep = 1h;
        return (deliver);
    }
    # Large archives are better sent by nginx than kept in RAM.
    if (std.integer(beresp.http.Content-Length, 0) > 10485760) {
        set beresp.uncacheable = true;
        set beresp.ttl = 120s;
    }
}

sub vcl_deliver {
    unset resp.http.Surrogate-Key;
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
