//! Where the token may come from: header everywhere, query string only on hub paths.

use crate::helpers::*;

#[actix_web::test]
async fn the_query_string_token_is_ignored_on_api_paths() {
    let app = spawn_app().await;
    let token = user_token("carol");
    let (status, body) = app
        .get_json(&format!("/api/auth/me?access_token={token}"), None)
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "missing_token");
    // With the header, the query parameter does not matter on /api (it is not even read).
    let (status, _) = app
        .get_json("/api/auth/me?access_token=something-else", Some(&token))
        .await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn a_malformed_authorization_header_is_refused() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/api/auth/me"))
        .insert_header(("Authorization", "Basic dXNlcjpwYXNz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    assert!(res.headers().contains_key("www-authenticate"));
}
