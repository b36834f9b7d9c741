// Validates FHIR R4 JSON resources against the R4 (4.0.1) core specification, offline:
// structure, cardinalities, datatypes, invariants and required bindings.
// Usage: java -cp <classpath> Validate.java FILE...
// Prints one line per message: file, severity, location, message. Exit 1 on any error.
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import ca.uhn.fhir.validation.SingleValidationMessage;
import ca.uhn.fhir.validation.ValidationResult;
import java.nio.file.Files;
import java.nio.file.Path;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;

public class Validate {
  public static void main(String[] args) throws Exception {
    FhirContext ctx = FhirContext.forR4();
    ValidationSupportChain support = new ValidationSupportChain(
        new DefaultProfileValidationSupport(ctx),
        new InMemoryTerminologyServerValidationSupport(ctx),
        new CommonCodeSystemsTerminologyService(ctx));
    FhirValidator validator = ctx.newValidator()
        .registerValidatorModule(new FhirInstanceValidator(support));
    int errors = 0;
    for (String file : args) {
      ValidationResult result = validator.validateWithResult(Files.readString(Path.of(file)));
      for (SingleValidationMessage m : result.getMessages()) {
        System.out.println(file + "\t" + m.getSeverity() + "\t" + m.getLocationString() + "\t"
            + m.getMessage().replace('\n', ' '));
        if (m.getSeverity() == ResultSeverityEnum.ERROR || m.getSeverity() == ResultSeverityEnum.FATAL) {
          errors++;
        }
      }
    }
    System.exit(errors == 0 ? 0 : 1);
  }
}
