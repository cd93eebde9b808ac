//! The spine: synthetic events → JSON edge → SOE → Kafka → decode, through
//! rdkafka's in-process MockCluster (fast) and the real nisshi broker.

use crate::helpers;

use rdkafka::mocking::MockCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spine_through_mock_cluster() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let topic = helpers::test_topic();
    // The mock cluster has no CreateTopics API; it creates topics itself.
    cluster.create_topic(&topic, 3, 1).expect("create topic");
    let rt = helpers::spine_round_trip(&cluster.bootstrap_servers(), &topic, 2_000).await;
    helpers::assert_exactly_once(&rt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spine_through_nisshi() {
    let bootstrap = helpers::nisshi();
    let settings = chitose_runtime::kafka::KafkaSettings::at(&bootstrap);
    let topic = helpers::test_topic();
    settings
        .ensure_topics(&[(&topic, 3)])
        .await
        .expect("create topic");
    // Creating an existing topic is not an error.
    settings
        .ensure_topics(&[(&topic, 3)])
        .await
        .expect("create topic twice");
    let rt = helpers::spine_round_trip(&bootstrap, &topic, 2_000).await;
    helpers::assert_exactly_once(&rt);
    let partitions: std::collections::HashSet<i32> =
        rt.received.iter().map(|(p, _, _)| *p).collect();
    assert_eq!(
        partitions.len(),
        3,
        "keys spread over the topic's partitions"
    );
}
