//! Routes come from manifests and paths from clients: no route and no path
//! makes the table panic, and a path is only ever matched whole segments.

use kiosk_routes::RouteTable;
use proptest::prelude::*;

fn route() -> impl Strategy<Value = String> {
    prop_oneof![
        "/[a-z]{0,6}(/[a-z:.]{0,6}){0,3}(/\\.\\.\\.)?",
        "[ -~]{0,24}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_routes_and_paths_never_panic(
        routes in proptest::collection::vec(route(), 0..8),
        paths in proptest::collection::vec("[ -~]{0,40}", 0..8),
    ) {
        let entries: Vec<(String, usize)> =
            routes.iter().cloned().enumerate().map(|(i, r)| (r, i)).collect();
        if let Ok(table) = RouteTable::build(entries) {
            for path in &paths {
                let _ = table.route(path);
            }
        }
    }

    #[test]
    fn an_exact_route_matches_only_its_own_path(
        segments in proptest::collection::vec("[a-z]{1,6}", 1..4),
        other in "/[a-z/]{0,20}",
    ) {
        let route = format!("/{}", segments.join("/"));
        let table = RouteTable::build([(route.clone(), 0usize)]).unwrap();
        prop_assert!(table.route(&route).is_some());
        let matched = table.route(&other).is_some();
        let same = other.trim_end_matches('/') == route;
        prop_assert!(!matched || same, "{other} matched {route}");
    }
}
