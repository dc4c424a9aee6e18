//! The private Redis Cluster fixture itself: the cluster it starts serves
//! every slot from three masters with one replica each, routes keys as Redis
//! Cluster does, and its manual and unplanned failovers leave the cluster in
//! the state a client expects afterwards.

use analytics_tests::private_cluster::{PrivateCluster, Role, SLOTS};

/// Writes `key` on the node that serves it and waits until its replica has
/// the write too (`WAIT 1`), so a failover cannot lose it.
fn write_replicated(cluster: &PrivateCluster, port: u16, key: &str, value: &str) {
    let mut master = cluster.connection(port);
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query(&mut master)
        .expect("SET on the master serving the key");
    let acknowledged: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(1000)
        .query(&mut master)
        .expect("WAIT");
    assert_eq!(acknowledged, 1, "the replica acknowledged the write");
}

fn get(cluster: &PrivateCluster, port: u16, key: &str) -> redis::RedisResult<Option<String>> {
    redis::cmd("GET")
        .arg(key)
        .query(&mut cluster.connection(port))
}

#[test]
fn a_started_cluster_serves_every_slot_from_three_masters_with_one_replica_each() {
    let cluster = PrivateCluster::start(3, 1);
    let nodes = cluster.nodes();
    assert_eq!(nodes.len(), 6);

    let masters = cluster.masters();
    assert_eq!(masters.len(), 3);
    let served: usize = masters
        .iter()
        .flat_map(|m| m.slots.iter())
        .map(|range| usize::from(range.end() - range.start()) + 1)
        .sum();
    assert_eq!(
        served,
        usize::from(SLOTS),
        "the masters' slots cover 0..16384 once"
    );
    for master in &masters {
        let replica = cluster.replica_of(master);
        assert_eq!(replica.role, Role::Replica);
        assert_ne!(replica.port, master.port);
    }

    // CLUSTER KEYSLOT hashes the hash tag only, as the service's keys rely on.
    assert_eq!(cluster.keyslot("foo"), 12182);
    assert_eq!(
        cluster.keyslot("analytics:{cpu_usage}:m:1"),
        cluster.keyslot("other:{cpu_usage}:d:2")
    );

    // The master serving a key accepts it; another master redirects to it.
    let key = "fixture:{routing}";
    let slot = cluster.keyslot(key);
    let owner = cluster.master_for_slot(slot);
    write_replicated(&cluster, owner.port, key, "here");
    assert_eq!(
        get(&cluster, owner.port, key).unwrap().as_deref(),
        Some("here")
    );
    let other = masters.iter().find(|m| m.port != owner.port).unwrap();
    let moved = get(&cluster, other.port, key).expect_err("another master answers MOVED");
    // (address, slot) of `MOVED <slot> <address>`.
    let owner_address = format!("127.0.0.1:{}", owner.port);
    assert_eq!(moved.redirect_node(), Some((owner_address.as_str(), slot)));
    assert!(cluster.seed_url().starts_with("redis://127.0.0.1:"));
}

#[test]
fn a_manual_failover_swaps_the_roles_of_a_master_and_its_replica() {
    let cluster = PrivateCluster::start(3, 1);
    let key = "fixture:{manual}";
    let slot = cluster.keyslot(key);
    let master = cluster.master_for_slot(slot);
    let replica = cluster.replica_of(&master);
    write_replicated(&cluster, master.port, key, "kept");

    cluster.failover_manual(&replica);

    let now = cluster.master_for_slot(slot);
    assert_eq!(now.id, replica.id, "the replica serves the slot");
    assert_eq!(
        now.slots, master.slots,
        "with all of its old master's slots"
    );
    let old = cluster
        .nodes()
        .into_iter()
        .find(|n| n.id == master.id)
        .unwrap();
    assert_eq!(old.role, Role::Replica);
    assert_eq!(old.master_id.as_deref(), Some(replica.id.as_str()));
    assert_eq!(
        get(&cluster, now.port, key).unwrap().as_deref(),
        Some("kept")
    );
}

#[test]
fn killing_a_master_promotes_its_replica_and_the_master_rejoins_as_a_replica() {
    let mut cluster = PrivateCluster::start(3, 1);
    let key = "fixture:{unplanned}";
    let slot = cluster.keyslot(key);
    let master = cluster.master_for_slot(slot);
    let replica = cluster.replica_of(&master);
    write_replicated(&cluster, master.port, key, "survives");

    let promoted = cluster.kill_master(&master);

    assert_eq!(promoted.id, replica.id);
    assert_eq!(cluster.master_for_slot(slot).id, replica.id);
    assert_eq!(
        get(&cluster, promoted.port, key).unwrap().as_deref(),
        Some("survives")
    );
    assert!(!cluster
        .node_urls()
        .contains(&format!("redis://127.0.0.1:{}", master.port)));

    cluster.restart_node(master.port);
    let rejoined = cluster
        .nodes()
        .into_iter()
        .find(|n| n.id == master.id)
        .unwrap();
    assert_eq!(rejoined.role, Role::Replica);
    assert_eq!(rejoined.master_id.as_deref(), Some(replica.id.as_str()));
}
