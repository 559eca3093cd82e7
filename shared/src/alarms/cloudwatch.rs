//! [`Alarms`] over CloudWatch's Query API, by hand: aws-sdk-cloudwatch is not among the
//! crates this build may use, and one read-only action does not need it. The request is the
//! documented form (API reference, *DescribeAlarms*; *Making Query API requests*), signed
//! with SigV4 (aws-sigv4, the SDK's own signer) with the credentials, region and endpoint
//! of the functions' `SdkConfig`, sent through the SDK's default HTTPS connector, and its XML
//! answer read with aws-smithy-xml, the SDK's own decoder.

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::http::{HttpConnector, SharedHttpConnector};
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
use aws_smithy_xml::decode::{try_data, Document, ScopedDecoder};

use super::{AlarmState, AlarmValue, Alarms, AlarmsAnswer, AlarmsError, AlarmsErrorKind};

/// CloudWatch's Query API version (API reference, *Welcome*).
const API_VERSION: &str = "2010-08-01";
/// The SigV4 signing name of CloudWatch.
const SIGNING_NAME: &str = "monitoring";
/// Attempts per call: the coverage check reads again a minute later anyway.
const ATTEMPTS: u32 = 3;
/// The environment variable that points CloudWatch alone elsewhere (the SDKs' service-specific
/// endpoint variable), before `AWS_ENDPOINT_URL`.
pub const ENDPOINT_VARIABLE: &str = "AWS_ENDPOINT_URL_CLOUDWATCH";

/// The production [`Alarms`]: the process's credentials, region and endpoint.
#[derive(Clone, Debug)]
pub struct CloudWatchAlarms {
    connector: SharedHttpConnector,
    credentials: SharedCredentialsProvider,
    region: String,
    endpoint: String,
}

impl CloudWatchAlarms {
    /// From the functions' `SdkConfig`; `None` where it lacks credentials, a region or an
    /// HTTPS connector (rollouts with alarms then wait, and say so).
    pub fn from_config(config: &aws_config::SdkConfig) -> Option<Self> {
        let region = config.region()?.to_string();
        let settings = aws_smithy_runtime_api::client::http::HttpConnectorSettings::builder()
            .connect_timeout(Duration::from_secs(3))
            .read_timeout(Duration::from_secs(crate::aws::ATTEMPT_TIMEOUT_SECONDS))
            .build();
        let connector = aws_smithy_http_client::default_connector(&settings, config.sleep_impl())?;
        let configured = std::env::var(ENDPOINT_VARIABLE)
            .ok()
            .or_else(|| config.endpoint_url().map(str::to_string));
        Some(Self {
            connector,
            credentials: config.credentials_provider()?,
            endpoint: endpoint_for(&region, configured.as_deref()),
            region,
        })
    }

    /// One signed Query call: answers the XML body of a 2xx answer, or the error CloudWatch
    /// gave. Throttling and transient failures are tried again, twice.
    pub async fn query(
        &self,
        operation: &'static str,
        params: &[(String, String)],
    ) -> Result<String, AlarmsError> {
        let mut form = vec![
            ("Action".to_string(), operation.to_string()),
            ("Version".to_string(), API_VERSION.to_string()),
        ];
        form.extend_from_slice(params);
        let body = encode_form(&form);
        let mut attempt = 1;
        loop {
            match self.attempt(operation, &body).await {
                Err(error) if error.is_retryable() && attempt < ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                    attempt += 1;
                }
                answer => return answer,
            }
        }
    }

    /// The Query form as a SigV4-signed POST to the endpoint.
    async fn signed_request(
        &self,
        body: &str,
    ) -> Result<aws_smithy_runtime_api::http::Request, (AlarmsErrorKind, &'static str, String)>
    {
        let invalid = |code: &'static str| move |e: String| (AlarmsErrorKind::Invalid, code, e);
        let credentials = self.credentials.provide_credentials().await.map_err(|e| {
            (
                AlarmsErrorKind::AccessDenied,
                "NoCredentials",
                e.to_string(),
            )
        })?;
        let identity: Identity = credentials.into();
        let mut request = http::Request::builder()
            .method("POST")
            .uri(&self.endpoint)
            .header(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(SdkBody::from(body.to_string()))
            .map_err(|e| invalid("BadEndpoint")(e.to_string()))?;
        let signing = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SIGNING_NAME)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| invalid("Signing")(e.to_string()))?
            .into();
        let headers = request
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
        let signable = SignableRequest::new(
            "POST",
            self.endpoint.as_str(),
            headers,
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| invalid("Signing")(e.to_string()))?;
        let (instructions, _) = sign(signable, &signing)
            .map_err(|e| invalid("Signing")(e.to_string()))?
            .into_parts();
        instructions.apply_to_request_http1x(&mut request);
        request
            .try_into()
            .map_err(|e: aws_smithy_runtime_api::http::HttpError| invalid("Request")(e.to_string()))
    }

    async fn attempt(&self, operation: &'static str, body: &str) -> Result<String, AlarmsError> {
        let failed = |kind, code: &str, message: String| AlarmsError {
            operation,
            kind,
            code: code.into(),
            message,
        };
        let request = self
            .signed_request(body)
            .await
            .map_err(|(kind, code, message)| failed(kind, code, message))?;
        let call = self.connector.call(request);
        let timeout = Duration::from_secs(crate::aws::OPERATION_TIMEOUT_SECONDS);
        let response = match tokio::time::timeout(timeout, call).await {
            Err(_) => {
                return Err(failed(
                    AlarmsErrorKind::Transient,
                    "Timeout",
                    format!("no answer within {} s", timeout.as_secs()),
                ))
            }
            Ok(Err(error)) => {
                return Err(failed(
                    AlarmsErrorKind::Transient,
                    "Connection",
                    error.to_string(),
                ))
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status().as_u16();
        let bytes = ByteStream::new(response.into_body())
            .collect()
            .await
            .map_err(|e| failed(AlarmsErrorKind::Transient, "Body", e.to_string()))?
            .into_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let (code, message) = parse_error(&text);
        Err(failed(error_kind(status, &code), &code, message))
    }
}

impl Alarms for CloudWatchAlarms {
    fn describe_alarms<'a>(&'a self, names: &'a [String]) -> AlarmsAnswer<'a> {
        Box::pin(async move {
            let mut states = Vec::new();
            let mut next_token = None;
            loop {
                let form = describe_alarms_form(names, next_token.as_deref());
                let xml = self.query("DescribeAlarms", &form).await?;
                let (page, token) = parse_describe_alarms(&xml).map_err(|message| AlarmsError {
                    operation: "DescribeAlarms",
                    kind: AlarmsErrorKind::Transient,
                    code: "MalformedAnswer".into(),
                    message,
                })?;
                states.extend(page);
                match token {
                    Some(token) if !token.is_empty() => next_token = Some(token),
                    _ => return Ok(states),
                }
            }
        })
    }
}

/// `https://monitoring.<region>.amazonaws.com` (`.com.cn` in China), unless an endpoint is
/// configured (`AWS_ENDPOINT_URL_CLOUDWATCH`, `AWS_ENDPOINT_URL`: a local stack in tests).
pub fn endpoint_for(region: &str, configured: Option<&str>) -> String {
    match configured {
        Some(url) if !url.is_empty() => url.trim_end_matches('/').to_string() + "/",
        _ if region.starts_with("cn-") => format!("https://monitoring.{region}.amazonaws.com.cn/"),
        _ => format!("https://monitoring.{region}.amazonaws.com/"),
    }
}

/// DescribeAlarms' form for these names: metric and composite alarms both (without
/// `AlarmTypes` only metric alarms are answered: API reference, *DescribeAlarms*).
pub fn describe_alarms_form(names: &[String], next_token: Option<&str>) -> Vec<(String, String)> {
    let mut form = vec![
        (
            "AlarmTypes.member.1".to_string(),
            "CompositeAlarm".to_string(),
        ),
        ("AlarmTypes.member.2".to_string(), "MetricAlarm".to_string()),
        ("MaxRecords".to_string(), "100".to_string()),
    ];
    for (index, name) in names.iter().enumerate() {
        form.push((format!("AlarmNames.member.{}", index + 1), name.clone()));
    }
    if let Some(token) = next_token {
        form.push(("NextToken".to_string(), token.to_string()));
    }
    form
}

/// `application/x-www-form-urlencoded`: unreserved characters as they are, the rest
/// percent-encoded (spaces too, as SigV4's canonical form wants).
pub fn encode_form(params: &[(String, String)]) -> String {
    fn encode(text: &str) -> String {
        text.bytes()
            .map(|byte| match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (byte as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect()
    }
    params
        .iter()
        .map(|(key, value)| format!("{}={}", encode(key), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn decode_error(error: aws_smithy_xml::decode::XmlDecodeError) -> String {
    format!("DescribeAlarms answered XML that could not be read: {error}")
}

fn text_of(tag: &mut ScopedDecoder<'_, '_>) -> Result<String, String> {
    try_data(tag)
        .map(|text| text.into_owned())
        .map_err(decode_error)
}

/// One `<member>` of `<MetricAlarms>` or `<CompositeAlarms>`.
fn parse_alarm(member: &mut ScopedDecoder<'_, '_>) -> Result<Option<AlarmState>, String> {
    let (mut name, mut value, mut reason) = (None, None, String::new());
    let (mut period, mut evaluation_periods) = (None, None);
    while let Some(mut field) = member.next_tag() {
        let tag = field.start_el().local().to_string();
        match tag.as_str() {
            "AlarmName" => name = Some(text_of(&mut field)?),
            "StateValue" => value = AlarmValue::parse(&text_of(&mut field)?),
            "StateReason" => reason = text_of(&mut field)?,
            "Period" => period = text_of(&mut field)?.parse().ok(),
            "EvaluationPeriods" => evaluation_periods = text_of(&mut field)?.parse().ok(),
            _ => {}
        }
    }
    Ok(match (name, value) {
        (Some(name), Some(value)) => Some(AlarmState {
            name,
            value,
            reason,
            period_seconds: period,
            evaluation_periods,
        }),
        _ => None,
    })
}

/// The alarms of a DescribeAlarms answer, and its `NextToken`.
pub fn parse_describe_alarms(xml: &str) -> Result<(Vec<AlarmState>, Option<String>), String> {
    let mut document = Document::new(xml);
    let mut root = document.root_element().map_err(decode_error)?;
    if !root.start_el().matches("DescribeAlarmsResponse") {
        let raw: String = xml.chars().take(200).collect();
        return Err(format!("DescribeAlarms answered something else: {raw}"));
    }
    let mut states = Vec::new();
    let mut next_token = None;
    while let Some(mut result) = root.next_tag() {
        if !result.start_el().matches("DescribeAlarmsResult") {
            continue;
        }
        while let Some(mut section) = result.next_tag() {
            let local = section.start_el().local().to_string();
            match local.as_str() {
                "MetricAlarms" | "CompositeAlarms" => {
                    while let Some(mut member) = section.next_tag() {
                        if member.start_el().matches("member") {
                            states.extend(parse_alarm(&mut member)?);
                        }
                    }
                }
                "NextToken" => next_token = Some(text_of(&mut section)?),
                _ => {}
            }
        }
    }
    Ok((states, next_token))
}

/// The `Code` and `Message` of a Query error answer (`<ErrorResponse><Error>…`); the raw text
/// where it is not one.
pub fn parse_error(xml: &str) -> (String, String) {
    let mut document = Document::new(xml);
    let (mut code, mut message) = (String::new(), String::new());
    if let Ok(mut root) = document.root_element() {
        while let Some(mut error) = root.next_tag() {
            if !error.start_el().matches("Error") {
                continue;
            }
            while let Some(mut field) = error.next_tag() {
                let tag = field.start_el().local().to_string();
                match tag.as_str() {
                    "Code" => code = text_of(&mut field).unwrap_or_default(),
                    "Message" => message = text_of(&mut field).unwrap_or_default(),
                    _ => {}
                }
            }
        }
    }
    if code.is_empty() {
        let raw: String = xml.chars().take(300).collect();
        return ("Unknown".into(), raw);
    }
    (code, message)
}

fn error_kind(status: u16, code: &str) -> AlarmsErrorKind {
    match code {
        "Throttling" | "ThrottlingException" | "RequestLimitExceeded" => AlarmsErrorKind::Throttled,
        "AccessDenied"
        | "AccessDeniedException"
        | "InvalidClientTokenId"
        | "UnrecognizedClientException"
        | "SignatureDoesNotMatch"
        | "ExpiredToken" => AlarmsErrorKind::AccessDenied,
        _ if status == 429 => AlarmsErrorKind::Throttled,
        _ if status >= 500 => AlarmsErrorKind::Transient,
        _ => AlarmsErrorKind::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DescribeAlarms' answer as the API reference shows one, a composite alarm added.
    const ANSWER: &str = r#"<DescribeAlarmsResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/">
  <DescribeAlarmsResult>
    <CompositeAlarms>
      <member>
        <AlarmName>agent-health</AlarmName>
        <StateValue>OK</StateValue>
        <StateReason>all children OK</StateReason>
        <AlarmRule>ALARM(errors) OR ALARM(latency)</AlarmRule>
      </member>
    </CompositeAlarms>
    <MetricAlarms>
      <member>
        <AlarmName>agent-errors &amp; drops</AlarmName>
        <StateValue>ALARM</StateValue>
        <StateReason>Threshold Crossed: 3 datapoints [12.0, 9.0, 8.0] were greater than the threshold (5.0).</StateReason>
        <Period>60</Period>
        <EvaluationPeriods>3</EvaluationPeriods>
        <Dimensions>
          <member><Name>ClusterName</Name><Value>prod</Value></member>
        </Dimensions>
      </member>
    </MetricAlarms>
    <NextToken>page-2</NextToken>
  </DescribeAlarmsResult>
  <ResponseMetadata><RequestId>f1c3a2de-0000-0000-0000-000000000000</RequestId></ResponseMetadata>
</DescribeAlarmsResponse>"#;

    #[test]
    fn an_answer_gives_each_alarms_state_window_and_the_next_page() {
        let (states, token) = parse_describe_alarms(ANSWER).unwrap();
        assert_eq!(token.as_deref(), Some("page-2"));
        assert_eq!(states.len(), 2);
        assert_eq!(states[0].name, "agent-health");
        assert_eq!(states[0].value, AlarmValue::Ok);
        assert_eq!(states[0].period_seconds, None);
        assert_eq!(states[1].name, "agent-errors & drops");
        assert_eq!(states[1].value, AlarmValue::Alarm);
        assert!(states[1].reason.starts_with("Threshold Crossed"));
        assert_eq!(states[1].period_seconds, Some(60));
        assert_eq!(states[1].evaluation_periods, Some(3));
    }

    #[test]
    fn an_empty_answer_knows_no_alarm() {
        let xml = r#"<DescribeAlarmsResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/"><DescribeAlarmsResult><MetricAlarms/><CompositeAlarms/></DescribeAlarmsResult></DescribeAlarmsResponse>"#;
        assert_eq!(parse_describe_alarms(xml).unwrap(), (Vec::new(), None));
        assert!(
            parse_describe_alarms("<html>bad gateway").is_err(),
            "{:?}",
            parse_describe_alarms("<html>bad gateway")
        );
    }

    #[test]
    fn errors_name_their_code_and_kind() {
        let xml = r#"<ErrorResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User: arn:aws:sts::1:assumed-role/deploy is not authorized to perform: cloudwatch:DescribeAlarms on resource: arn:aws:cloudwatch:us-east-1:1:alarm:x</Message></Error><RequestId>r</RequestId></ErrorResponse>"#;
        let (code, message) = parse_error(xml);
        assert_eq!(code, "AccessDenied");
        assert!(message.contains("not authorized"));
        assert_eq!(error_kind(403, &code), AlarmsErrorKind::AccessDenied);
        assert_eq!(error_kind(400, "Throttling"), AlarmsErrorKind::Throttled);
        assert_eq!(
            error_kind(503, "ServiceUnavailable"),
            AlarmsErrorKind::Transient
        );
        assert_eq!(
            error_kind(400, "InvalidParameterValue"),
            AlarmsErrorKind::Invalid
        );
        assert_eq!(parse_error("<html>bad gateway</html>").0, "Unknown");
    }

    #[test]
    fn the_form_names_both_alarm_types_and_encodes_what_it_must() {
        let form = describe_alarms_form(&["agent errors/5xx".into(), "b".into()], Some("t+1"));
        let body = encode_form(&form);
        assert_eq!(
            body,
            "AlarmTypes.member.1=CompositeAlarm&AlarmTypes.member.2=MetricAlarm&MaxRecords=100\
             &AlarmNames.member.1=agent%20errors%2F5xx&AlarmNames.member.2=b&NextToken=t%2B1"
        );
    }

    #[test]
    fn the_endpoint_is_the_regions_unless_one_is_configured() {
        assert_eq!(
            endpoint_for("eu-west-1", None),
            "https://monitoring.eu-west-1.amazonaws.com/"
        );
        assert_eq!(
            endpoint_for("cn-north-1", None),
            "https://monitoring.cn-north-1.amazonaws.com.cn/"
        );
        assert_eq!(
            endpoint_for("us-east-1", Some("http://127.0.0.1:5000")),
            "http://127.0.0.1:5000/"
        );
    }
}
