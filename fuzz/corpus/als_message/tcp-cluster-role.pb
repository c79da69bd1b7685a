
4
-
envoy$kgateway-kube-gateway-api~default~gwtcp1
/
'
/run/envoy.sock*€’¸Ã˜þÿÿÿztcp	